"""Epoch checkpoints: the last two kept, written whole or not at all, a damaged one set aside."""
from __future__ import annotations

import pytest
import torch

from training import checkpoints


def payload(epoch: int) -> dict:
    weights = {"w": torch.full((64, 64), float(epoch))}
    return {"model": weights, "optimizer": {}, "scheduler": {}, "state": {"epoch": epoch}, "best_model": weights}


def test_the_last_two_checkpoints_are_kept_and_nothing_half_written_is_left(tmp_path):
    for epoch in (1, 2, 3):
        checkpoints.save(tmp_path, payload(epoch), epoch)
    assert [p.name for p in checkpoints.checkpoints(tmp_path)] == ["checkpoint-epoch0003.pt", "checkpoint-epoch0002.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-epoch0002.pt", "checkpoint-epoch0003.pt"]
    path, loaded = checkpoints.latest_readable(tmp_path)
    assert path.name == "checkpoint-epoch0003.pt" and loaded["state"]["epoch"] == 3
    with pytest.raises(ValueError, match="best_model"):
        checkpoints.save(tmp_path, {k: v for k, v in payload(4).items() if k != "best_model"}, 4)


def test_a_cut_checkpoint_is_set_aside_by_name_and_the_one_before_is_used(tmp_path, capsys):
    for epoch in (1, 2):
        checkpoints.save(tmp_path, payload(epoch), epoch)
    newest = checkpoints.checkpoint_path(tmp_path, 2)
    with open(newest, "r+b") as handle:
        handle.truncate(newest.stat().st_size // 2)
    path, loaded = checkpoints.latest_readable(tmp_path)
    assert path.name == "checkpoint-epoch0001.pt" and loaded["state"]["epoch"] == 1
    assert torch.equal(loaded["model"]["w"], torch.full((64, 64), 1.0))
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is unreadable (" in err
    assert "resuming from checkpoint-epoch0001.pt" in err
    assert (tmp_path / "checkpoint-epoch0002.pt.unreadable").exists()      # kept for inspection

    # the next epoch's checkpoint is saved as usual; when every one is damaged the run starts afresh
    checkpoints.save(tmp_path, payload(2), 2)
    for p in checkpoints.checkpoints(tmp_path):
        p.write_bytes(b"not a checkpoint")
    assert checkpoints.latest_readable(tmp_path) is None
    assert "no readable checkpoint is left: training starts afresh" in capsys.readouterr().err
    assert checkpoints.checkpoints(tmp_path) == []
