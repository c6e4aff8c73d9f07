"""The slot taxonomy and task groupings, parsed from conf/slots.yaml.

The feature table stores each example's slot; the task an example trains is derived from
the slot by a grouping at training time, so one feature table serves every experiment.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SLOT_ATTRIBUTES = ("format", "modality", "content")
GROUP_BY = SLOT_ATTRIBUTES + ("slot", "all")
SLOT_INPUTS = ("slot",) + SLOT_ATTRIBUTES       # what a model may take from the taxonomy as inputs


@dataclass(frozen=True)
class Slot:
    name: str
    format: str
    modality: str
    content: str


@dataclass(frozen=True)
class Grouping:
    """Maps every slot to exactly one task; ``tasks`` fixes the task (head) order."""
    name: str
    tasks: tuple[str, ...]
    task_of_slot: Mapping[str, str]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def task_index(self, slot: str) -> int:
        return self.tasks.index(self.task_of_slot[slot])

    def slot_to_task_index(self) -> dict[str, int]:
        return {slot: self.tasks.index(task) for slot, task in self.task_of_slot.items()}


@dataclass(frozen=True)
class Taxonomy:
    slots: Mapping[str, Slot]
    groupings: Mapping[str, Grouping]
    default_grouping: str

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(self.slots)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.modality for s in self.slots.values()))

    def modality_of(self) -> dict[str, str]:
        return {name: s.modality for name, s in self.slots.items()}

    def slots_of_modality(self, modality: str) -> tuple[str, ...]:
        return tuple(n for n, s in self.slots.items() if s.modality == modality)

    def input_values(self, attribute: str) -> tuple[str, ...]:
        """The values of a slot input (``slot`` or a taxonomy attribute), in taxonomy order."""
        if attribute == "slot":
            return self.slot_names
        if attribute not in SLOT_ATTRIBUTES:
            raise KeyError(f"unknown slot input {attribute!r}; allowed: {', '.join(SLOT_INPUTS)}")
        return tuple(dict.fromkeys(getattr(s, attribute) for s in self.slots.values()))

    def input_ids(self, attribute: str) -> tuple[int, ...]:
        """Per slot (taxonomy order), the 1-based id of its ``attribute`` value (0 stays OOV)."""
        values = self.input_values(attribute)
        return tuple(values.index(name if attribute == "slot" else getattr(s, attribute)) + 1
                     for name, s in self.slots.items())

    def grouping(self, name: str | None = None) -> Grouping:
        name = name or self.default_grouping
        if name not in self.groupings:
            raise KeyError(f"unknown grouping {name!r}; configured: {', '.join(self.groupings)}")
        return self.groupings[name]


def parse_taxonomy(slots: Any, groupings: Any, default_grouping: Any, source: str,
                   error: type[Exception] = ValueError) -> Taxonomy:
    if not isinstance(slots, Mapping) or not slots:
        raise error(f"{source}: 'slots' must be a non-empty mapping of slot name -> attributes")
    parsed: dict[str, Slot] = {}
    for name, attrs in slots.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise error(f"{source}: slot name {name!r} must be an identifier")
        if not isinstance(attrs, Mapping):
            raise error(f"{source}: 'slots.{name}' must map format/modality/content")
        unknown = sorted(set(attrs) - set(SLOT_ATTRIBUTES))
        missing = [a for a in SLOT_ATTRIBUTES if not isinstance(attrs.get(a), str)]
        if unknown:
            raise error(f"{source}: 'slots.{name}' has unknown key(s) {unknown}")
        if missing:
            raise error(f"{source}: 'slots.{name}.{missing[0]}' is required (a name)")
        parsed[name] = Slot(name, attrs["format"], attrs["modality"], attrs["content"])

    if not isinstance(groupings, Mapping) or not groupings:
        raise error(f"{source}: 'groupings' must be a non-empty mapping")
    parsed_groupings = {name: _parse_grouping(name, spec, parsed, source, error)
                        for name, spec in groupings.items()}
    if default_grouping not in parsed_groupings:
        raise error(f"{source}: 'default_grouping' must be one of {list(parsed_groupings)}, "
                    f"got {default_grouping!r}")
    return Taxonomy(parsed, parsed_groupings, default_grouping)


def _parse_grouping(name: str, spec: Any, slots: Mapping[str, Slot], source: str,
                    error: type[Exception]) -> Grouping:
    key = f"groupings.{name}"
    if not isinstance(spec, Mapping) or spec.get("by") not in GROUP_BY:
        raise error(f"{source}: '{key}.by' must be one of {list(GROUP_BY)}")
    unknown = sorted(set(spec) - {"by", "tasks"})
    if unknown:
        raise error(f"{source}: '{key}' has unknown key(s) {unknown}")
    by = spec["by"]
    if by == "all":
        derived = {s: "all" for s in slots}
    elif by == "slot":
        derived = {s: s for s in slots}
    else:
        derived = {s: getattr(info, by) for s, info in slots.items()}
    natural = tuple(dict.fromkeys(derived.values()))
    tasks = spec.get("tasks")
    if by == "all" and tasks is not None and len(tasks) == 1:
        derived = {s: tasks[0] for s in slots}
        natural = tuple(tasks)
    if tasks is None:
        tasks = natural
    if not isinstance(tasks, (list, tuple)) or sorted(tasks) != sorted(natural):
        raise error(f"{source}: '{key}.tasks' must list exactly the tasks {sorted(natural)} "
                    f"(from by: {by}), got {tasks!r}")
    return Grouping(name, tuple(tasks), derived)
