"""The code MLflow logs for the CAMoE pyfunc ("models from code": the model object is built when
the model is loaded, nothing is pickled). See training/mlflow_model.py."""
import mlflow.models

from training.mlflow_model import CamoePyfunc

mlflow.models.set_model(CamoePyfunc())
