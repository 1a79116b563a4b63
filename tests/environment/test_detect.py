import pytest

from runctl.environment.detect import EnvSource, detect, inline_metadata
from runctl.errors import ConfigError

INLINE = '''# /// script
# requires-python = ">=3.10"
# dependencies = ["tinypkg==1.0", "other>=2"]
# ///
print("hi")
'''


def test_nothing_declared(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    found = detect(tmp_path, "train.py")
    assert found == EnvSource()
    assert "none declared" in found.describe()


def test_order_uv_project_first(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\nrequires-python = ">=3.10"\n')
    (tmp_path / "uv.lock").write_text("version = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "train.py").write_text(INLINE)
    found = detect(tmp_path, "train.py")
    assert (found.kind, found.files, found.python) == ("uv-project", ("pyproject.toml", "uv.lock"), ">=3.10")
    assert found.describe() == "environment: pyproject.toml + uv.lock (uv sync, Python >=3.10)"
    (tmp_path / "uv.lock").unlink()
    assert detect(tmp_path, None).describe() == "environment: pyproject.toml (uv pip install, Python >=3.10)"


def test_python_version_file_wins_and_is_an_input(tmp_path):
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / ".python-version").write_text("3.12\n")
    found = detect(tmp_path, None)
    assert (found.kind, found.files, found.python) == ("requirements", ("requirements.txt", ".python-version"), "3.12")


def test_requirements_before_inline(tmp_path):
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "train.py").write_text(INLINE)
    assert detect(tmp_path, "train.py").kind == "requirements"


def test_inline_metadata(tmp_path):
    (tmp_path / "train.py").write_text(INLINE)
    found = detect(tmp_path, "train.py")
    assert (found.kind, found.dependencies, found.python, found.script) == (
        "inline", ("tinypkg==1.0", "other>=2"), ">=3.10", "train.py")
    assert found.describe() == "environment: inline script metadata of train.py (2 dependencies, Python >=3.10)"
    assert EnvSource.from_dict(found.to_dict()) == found


def test_inline_metadata_bad_toml_names_the_script():
    with pytest.raises(ConfigError, match="inline script metadata of x.py"):
        inline_metadata("# /// script\n# dependencies = [\n# ///\n", "x.py")


def test_inline_dependencies_must_be_strings(tmp_path):
    (tmp_path / "t.py").write_text("# /// script\n# dependencies = [1]\n# ///\n")
    with pytest.raises(ConfigError, match="list of strings"):
        detect(tmp_path, "t.py")


def test_bad_pyproject_is_one_clear_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(ConfigError, match="pyproject.toml cannot be read"):
        detect(tmp_path, None)
