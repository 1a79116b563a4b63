"""Instance type names checked without a request: ``family.size`` with a size EC2 has.

The family is only checked for its shape here; ``Ec2.check_instance_types`` asks
DescribeInstanceTypes whether the region has it. Pure.
"""

from __future__ import annotations

import difflib
import os
import re

from runctl.errors import UsageError

SHAPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+\Z")
SIZE = re.compile(r"^(nano|micro|small|medium|large|xlarge|\d+xlarge|metal|metal-\d+xl)\Z")
COMMON_SIZES = ("nano", "micro", "small", "medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge",
                "12xlarge", "16xlarge", "24xlarge", "48xlarge")


POPULAR_FAMILIES = ("t3", "t3a", "t4g", "m5", "m6i", "m7i", "c5", "c6i", "c7i", "r5", "r6i", "r7i",
                    "g4dn", "g5", "g6", "g6e", "p3", "p4d", "p5", "inf2", "trn1")


def suggest(name: str, candidates: list[str] | tuple[str, ...] = ()) -> str:
    """'; did you mean 'x'?' for the closest other type: the same family in a common size,
    or a popular family in the same size; '' when nothing is close."""
    family, _, size = name.partition(".")
    if candidates:
        pool = list(candidates)
    elif SIZE.match(size):  # the size exists: the family is the mistake
        pool = [f"{f}.{size}" for f in POPULAR_FAMILIES]
    else:  # a misspelt size: prefer the sizes that start the same way ('mega' -> 'medium')
        prefix = max(len(os.path.commonprefix([size.lower(), s])) for s in COMMON_SIZES)
        sizes = [s for s in COMMON_SIZES if len(os.path.commonprefix([size.lower(), s])) == prefix] \
            if prefix >= 2 else list(COMMON_SIZES)
        pool = [f"{family.lower()}.{s}" for s in sizes]
    close = difflib.get_close_matches(name, [c for c in pool if c != name], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_shape(name: str) -> str:
    """``name`` when it looks like an instance type, else ``UsageError`` naming it."""
    if not SHAPE.match(name) or not SIZE.match(name.partition(".")[2]):
        raise UsageError(f"unknown instance type {name!r}{suggest(name) if '.' in name else ''} "
                         "(a type is family.size, e.g. 't3.medium', 'g5.xlarge')")
    return name


def parse_types(text: str | None) -> tuple[str, ...]:
    """A comma-separated list of instance types, each checked for its shape."""
    if not text:
        return ()
    return tuple(check_shape(part.strip()) for part in text.split(",") if part.strip())


AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
_FAMILY = re.compile(r"^([a-z]+)(\d+)([a-z]*)")


def architecture(instance_type: str) -> str:
    """'arm64' for Graviton families (t4g, c7gn, g5g, ...), else 'x86_64'."""
    found = _FAMILY.match(instance_type)
    return "arm64" if found and "g" in found.group(3) else "x86_64"


AMD_GPU_FAMILIES = frozenset({"g4ad"})  # Radeon GPUs: no NVIDIA driver, no ``docker run --gpus``


def has_nvidia_gpu(instance_type: str) -> bool:
    """Whether the type's GPUs are NVIDIA's: the g, gr and p families (g5g too), but AMD's g4ad."""
    family = instance_type.partition(".")[0].lower()
    found = _FAMILY.match(family)
    return bool(found) and found.group(1) in ("g", "gr", "p") and family not in AMD_GPU_FAMILIES


def ami_parameters(instance_type: str) -> list[str]:
    """SSM public parameters naming a current AMI for the type, best first: the Deep Learning
    Base AMI (NVIDIA driver, Amazon Linux 2023) for GPU types, then plain Amazon Linux 2023."""
    arch = architecture(instance_type)
    names = [DLAMI_PARAMETER.format(arch=arch)] if has_nvidia_gpu(instance_type) else []
    return [*names, AL2023_PARAMETER.format(arch=arch)]
