"""The classifier registry (train_cnn.arch): one spec per architecture.

A spec is data, as a defence's is: its class is named "module:Class" and imported only when a
model is built or loaded, so validating params.yaml imports no torch. Its params are the section
`train_cnn.<name>`, passed to the class as keywords beside `image_size` and `num_classes`; `kind`
names it in model files (`models.files`); `models.classifier.build_classifier` builds one. Add
one: a `ClassifierNet` subclass in its own module, an entry below, and its params section
(`core.params_training`, params.yaml).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from advdenoise.core.errors import PipelineError


@dataclass(frozen=True)
class ArchSpec:
    name: str  # train_cnn.arch, and the params section train_cnn.<name>
    cls: str  # "module:Class", a ClassifierNet taking (image_size, num_classes, **section)
    kind: str  # its model files' kind (the paper's CNN keeps "classifier")

    def load(self) -> Callable[..., Any]:
        """The class (a `models.classifier.ClassifierNet`), imported now."""
        module, _, name = self.cls.partition(":")
        found: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return found


ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec("paper", "advdenoise.models.classifier:Classifier", "classifier"),
    ArchSpec("resnet18", "advdenoise.models.resnet:ResNet18", "resnet18"),
)
ARCHS: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES)
KINDS: dict[str, ArchSpec] = {a.kind: a for a in ARCHITECTURES}


def arch_spec(name: str) -> ArchSpec:
    for spec in ARCHITECTURES:
        if spec.name == name:
            return spec
    raise PipelineError(f"unknown train_cnn.arch {name!r}; known: {list(ARCHS)}")
