from runctl.environment.detect import EnvSource
from runctl.environment.key import environment_key, platform_tag

REQ = EnvSource("requirements", ("requirements.txt",))
BASE = dict(python="3.11.7", platform="linux-x86_64-glibc2.36", setup=("make data",))


def key(source=REQ, files=None, **changes):
    return environment_key(source, files or {"requirements.txt": b"numpy==2\n"}, **{**BASE, **changes})


def test_same_inputs_same_key():
    assert key() == key()
    assert len(key()) == 32


def test_every_input_changes_the_key():
    base = key()
    assert key(files={"requirements.txt": b"numpy==3\n"}) != base
    assert key(python="3.12") != base
    assert key(platform="linux-aarch64-glibc2.36") != base
    assert key(setup=("make data", "make more")) != base
    assert key(source=EnvSource("inline", (), "", ("numpy==2",), "t.py"), files={}) != base


def test_platform_tag():
    assert platform_tag("linux", "x86_64", ("glibc", "2.36")) == "linux-x86_64-glibc2.36"
    assert platform_tag("darwin", "arm64", ("", "")) == "darwin-arm64"
