"""runctl.config: lookup order, environment overrides, validation and its messages."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from runctl.config import (
    SECTIONS,
    AwsConfig,
    Config,
    find_config_file,
    load_config,
    render_template,
)
from runctl.errors import ConfigError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository folder (it holds .git) under tmp_path."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    return root


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An environment whose user config folder is empty and private to the test."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(project: Path, environ: dict[str, str], text: str | None = None, **env: str) -> Config:
    if text is not None:
        write(project / ".runctl.toml", text)
    return load_config(cwd=project, environ={**environ, **env})


def error(project: Path, environ: dict[str, str], text: str | None = None, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(project, environ, text, **env)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- defaults and values

def test_defaults_without_any_file(project, environ):
    cfg = load(project, environ)
    assert cfg == Config()
    assert cfg.source_path is None
    assert cfg.aws.region == "us-east-1" and cfg.aws.use_spot is True and cfg.aws.spot_max_price is None
    assert cfg.checkpoint.keep_last_n == 5 and cfg.checkpoint.sync_interval == 0.0
    assert cfg.checkpoint.max_upload_share == 0.25
    assert cfg.docker.enabled is None and cfg.docker.gpus == "auto"
    assert cfg.local.stop_signal == "SIGTERM" and cfg.local.grace_period == 90.0
    assert set(cfg.origins) == set(cfg.values()) and set(cfg.origins.values()) == {"default"}


def test_values_cover_every_key_of_every_section():
    keys = Config().values()
    expected = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert set(keys) == expected


def test_config_and_sections_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.aws.region = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.source_path = Path("x")  # type: ignore[misc]


def test_file_values_are_typed_and_their_origins_name_the_line(project, environ):
    cfg = load(project, environ, """\
# a comment
[aws]
region = "eu-west-1"
fallback_instance_types = ["g5.xlarge", "g4dn.xlarge"]
spot_max_price = 1

[checkpoint]
keep_last_n = 2
sync_interval = 30

[local]
stop_signal = "SIGINT"
""")
    path = project / ".runctl.toml"
    assert cfg.source_path == path
    assert cfg.aws.region == "eu-west-1"
    assert cfg.aws.fallback_instance_types == ("g5.xlarge", "g4dn.xlarge")
    assert cfg.aws.spot_max_price == 1.0 and isinstance(cfg.aws.spot_max_price, float)
    assert cfg.checkpoint.sync_interval == 30.0 and isinstance(cfg.checkpoint.sync_interval, float)
    assert cfg.checkpoint.keep_last_n == 2
    assert cfg.local.stop_signal == "SIGINT"
    assert cfg.origins["aws.region"] == f"{path}:3"
    assert cfg.origins["aws.fallback_instance_types"] == f"{path}:4"
    assert cfg.origins["checkpoint.keep_last_n"] == f"{path}:8"
    assert cfg.origins["local.stop_signal"] == f"{path}:12"
    assert cfg.origins["aws.use_spot"] == "default"


def test_dotted_keys_and_inline_tables_are_read(project, environ):
    cfg = load(project, environ, 'aws.region = "ap-south-1"\ndocker = { enabled = false, gpus = "all" }\n')
    path = project / ".runctl.toml"
    assert cfg.aws.region == "ap-south-1" and cfg.origins["aws.region"] == f"{path}:1"
    assert cfg.docker.enabled is False and cfg.docker.gpus == "all"
    assert cfg.origins["docker.gpus"] == f"{path}:2"  # the line of the inline table


# ---------------------------------------------------------------- lookup order

def test_explicit_path_beats_env_beats_project_file(project, environ, tmp_path):
    write(project / ".runctl.toml", '[aws]\nregion = "from-project"\n')
    via_env = write(tmp_path / "env.toml", '[aws]\nregion = "from-env"\n')
    via_option = write(tmp_path / "option.toml", '[aws]\nregion = "from-option"\n')
    env = {**environ, "RUNCTL_CONFIG": str(via_env)}
    assert load_config(cwd=project, environ=environ).aws.region == "from-project"
    assert load_config(cwd=project, environ=env).aws.region == "from-env"
    cfg = load_config(via_option, cwd=project, environ=env)
    assert cfg.aws.region == "from-option" and cfg.source_path == via_option


def test_relative_explicit_path_is_resolved_against_cwd(project, environ):
    write(project / "conf" / "x.toml", '[aws]\nregion = "rel"\n')
    cfg = load_config(Path("conf/x.toml"), cwd=project, environ=environ)
    assert cfg.aws.region == "rel" and cfg.source_path == project / "conf" / "x.toml"


@pytest.mark.parametrize("how", ["option", "env"])
def test_missing_explicit_path_is_an_error_naming_it(project, environ, how):
    missing = project / "nope.toml"
    with pytest.raises(ConfigError) as info:
        if how == "option":
            load_config(missing, cwd=project, environ=environ)
        else:
            load_config(cwd=project, environ={**environ, "RUNCTL_CONFIG": str(missing)})
    source = "--config" if how == "option" else "RUNCTL_CONFIG"
    assert str(info.value) == f"config file {missing} (from {source}) does not exist"


def test_explicit_path_that_is_a_folder_is_an_error(project, environ):
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(project, cwd=project, environ=environ)


def test_empty_runctl_config_is_ignored(project, environ):
    assert load(project, environ, RUNCTL_CONFIG="").source_path is None


def test_file_is_found_in_a_parent_up_to_the_repository_root(project, environ):
    write(project / ".runctl.toml", '[aws]\nregion = "root"\n')
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    cfg = load_config(cwd=deep, environ=environ)
    assert cfg.aws.region == "root" and cfg.source_path == project / ".runctl.toml"


def test_nearest_file_wins(project, environ):
    write(project / ".runctl.toml", '[aws]\nregion = "root"\n')
    write(project / "a" / ".runctl.toml", '[aws]\nregion = "sub"\n')
    (project / "a" / "b").mkdir()
    assert load_config(cwd=project / "a" / "b", environ=environ).aws.region == "sub"


def test_lookup_stops_at_the_repository_root(project, environ, tmp_path):
    write(tmp_path / ".runctl.toml", '[aws]\nregion = "outside"\n')  # above the repo
    (project / "src").mkdir()
    assert find_config_file(cwd=project / "src", environ=environ) is None
    assert load_config(cwd=project / "src", environ=environ).aws.region == "us-east-1"


def test_without_a_repository_lookup_goes_up_the_tree(tmp_path, environ):
    write(tmp_path / "top" / ".runctl.toml", '[aws]\nregion = "top"\n')
    deep = tmp_path / "top" / "x" / "y"
    deep.mkdir(parents=True)
    assert load_config(cwd=deep, environ=environ).aws.region == "top"


def test_user_config_is_the_last_resort(project, environ, tmp_path):
    user = write(tmp_path / "xdg" / "runctl" / "config.toml", '[aws]\nregion = "user"\n')
    cfg = load_config(cwd=project, environ=environ)
    assert cfg.aws.region == "user" and cfg.source_path == user
    write(project / ".runctl.toml", '[aws]\nregion = "project"\n')
    assert load_config(cwd=project, environ=environ).aws.region == "project"


def test_user_config_defaults_to_home_dot_config(project, tmp_path):
    user = write(tmp_path / "home" / ".config" / "runctl" / "config.toml", "[aws]\nmax_restarts = 7\n")
    cfg = load_config(cwd=project, environ={"HOME": str(tmp_path / "home")})
    assert cfg.aws.max_restarts == 7 and cfg.source_path == user


# ---------------------------------------------------------------- environment overrides

@pytest.mark.parametrize(("var", "text", "key", "value"), [
    ("RUNCTL_AWS_REGION", "eu-central-1", "aws.region", "eu-central-1"),
    ("RUNCTL_CHECKPOINT_KEEP_LAST_N", "9", "checkpoint.keep_last_n", 9),
    ("RUNCTL_CHECKPOINT_SYNC_INTERVAL", "2.5", "checkpoint.sync_interval", 2.5),
    ("RUNCTL_CHECKPOINT_MAX_UPLOAD_SHARE", "0.5", "checkpoint.max_upload_share", 0.5),
    ("RUNCTL_AWS_SPOT_MAX_PRICE", "0.3", "aws.spot_max_price", 0.3),
    ("RUNCTL_AWS_SUBNET_IDS", "subnet-a, subnet-b,", "aws.subnet_ids", ("subnet-a", "subnet-b")),
    ("RUNCTL_AWS_USE_SPOT", "no", "aws.use_spot", False),
    ("RUNCTL_AWS_USE_SPOT", "0", "aws.use_spot", False),
    ("RUNCTL_AWS_USE_SPOT", "FALSE", "aws.use_spot", False),
    ("RUNCTL_LOCAL_SPOT_NOTICES", "yes", "local.spot_notices", True),
    ("RUNCTL_LOCAL_SPOT_NOTICES", "1", "local.spot_notices", True),
    ("RUNCTL_LOCAL_SPOT_NOTICES", "True", "local.spot_notices", True),
    ("RUNCTL_DOCKER_ENABLED", "true", "docker.enabled", True),
    ("RUNCTL_CHECKPOINT_STORE", "s3://b/p", "checkpoint.store", "s3://b/p"),
])
def test_env_overrides_are_parsed_to_the_key_type(project, environ, var, text, key, value):
    cfg = load(project, environ, "[aws]\nregion = 'file'\nsubnet_ids = ['x']\n", **{var: text})
    assert cfg.values()[key] == value
    assert type(cfg.values()[key]) is type(value)
    assert cfg.origins[key] == f"env {var}"


def test_env_beats_file(project, environ):
    cfg = load(project, environ, "[checkpoint]\nkeep_last_n = 3\n", RUNCTL_CHECKPOINT_KEEP_LAST_N="4")
    assert cfg.checkpoint.keep_last_n == 4
    assert cfg.source_path == project / ".runctl.toml"


def test_empty_env_clears_optional_keys_and_lists_and_is_ignored_otherwise(project, environ):
    cfg = load(project, environ, "[aws]\ns3_bucket = 'b'\nsubnet_ids = ['s']\nregion = 'r'\n",
               RUNCTL_AWS_S3_BUCKET="", RUNCTL_AWS_SUBNET_IDS=" ", RUNCTL_AWS_REGION="")
    assert cfg.aws.s3_bucket is None and cfg.origins["aws.s3_bucket"] == "env RUNCTL_AWS_S3_BUCKET"
    assert cfg.aws.subnet_ids == ()
    assert cfg.aws.region == "r"


@pytest.mark.parametrize("alias", ["RUNCTL_AUTO_RESUME", "TRAINCTL_AUTO_RESUME"])
def test_auto_resume_aliases(project, environ, alias):
    cfg = load(project, environ, **{alias: "1"})
    assert cfg.aws.auto_resume is True and cfg.origins["aws.auto_resume"] == f"env {alias}"


def test_canonical_auto_resume_variable_beats_the_aliases(project, environ):
    cfg = load(project, environ, RUNCTL_AWS_AUTO_RESUME="no", RUNCTL_AUTO_RESUME="yes", TRAINCTL_AUTO_RESUME="yes")
    assert cfg.aws.auto_resume is False


@pytest.mark.parametrize(("var", "text", "message"), [
    ("RUNCTL_AWS_USE_SPOT", "maybe",
     "RUNCTL_AWS_USE_SPOT (aws.use_spot) must be a boolean (1/0/true/false/yes/no), got 'maybe'"),
    ("RUNCTL_CHECKPOINT_KEEP_LAST_N", "five",
     "RUNCTL_CHECKPOINT_KEEP_LAST_N (checkpoint.keep_last_n) must be an integer, got 'five'"),
    ("RUNCTL_LOCAL_GRACE_PERIOD", "1m",
     "RUNCTL_LOCAL_GRACE_PERIOD (local.grace_period) must be a number, got '1m'"),
    ("RUNCTL_AUTO_RESUME", "2",
     "RUNCTL_AUTO_RESUME (aws.auto_resume) must be a boolean (1/0/true/false/yes/no), got '2'"),
    ("RUNCTL_CHECKPOINT_KEEP_LAST_N", "0",
     "RUNCTL_CHECKPOINT_KEEP_LAST_N (checkpoint.keep_last_n) must be >= 1, got 0"),
    ("RUNCTL_LOCAL_STOP_SIGNAL", "SIGNOPE",
     "RUNCTL_LOCAL_STOP_SIGNAL (local.stop_signal) must be a signal name such as SIGTERM or SIGINT, got \"SIGNOPE\""),
])
def test_bad_env_values_name_the_variable_and_the_type(project, environ, var, text, message):
    assert error(project, environ, **{var: text}) == message


def test_unrelated_runctl_variables_are_ignored(project, environ):
    assert load(project, environ, RUNCTL_JOB_ID="j1", RUNCTL_AWS_NOPE="x") == Config()


# ---------------------------------------------------------------- errors in the file

def test_toml_syntax_error_names_file_and_line(project, environ):
    message = error(project, environ, "[aws]\nregion = 'x'\nuse_spot = \n")
    assert message.startswith(f"{project / '.runctl.toml'}:3: invalid TOML: ")
    assert "(at line" not in message


def test_toml_error_at_end_of_document_uses_the_last_line(project, environ):
    message = error(project, environ, "[aws]\nregion = 'x\n")
    assert re.match(re.escape(str(project / ".runctl.toml")) + r":\d+: invalid TOML: ", message)


def test_duplicate_key_is_a_syntax_error(project, environ):
    message = error(project, environ, "[aws]\nregion = 'a'\nregion = 'b'\n")
    assert message.startswith(f"{project / '.runctl.toml'}:3: invalid TOML: ")


def test_unknown_key_suggests_the_closest(project, environ):
    path = project / ".runctl.toml"
    assert error(project, environ, "[aws]\nregoin = 'x'\n") == (
        f"unknown key 'aws.regoin' in {path}:2; did you mean 'region'?")


def test_unknown_key_without_a_close_match_lists_the_valid_ones(project, environ):
    message = error(project, environ, "[docker]\n\nzzz = 1\n")
    assert message.startswith(f"unknown key 'docker.zzz' in {project / '.runctl.toml'}:3; valid: 'enabled', ")


def test_unknown_section_suggests_the_closest(project, environ):
    path = project / ".runctl.toml"
    assert error(project, environ, "# x\n[chekpoint]\nkeep_last_n = 1\n") == (
        f"unknown section 'chekpoint' in {path}:2; did you mean [checkpoint]?")


def test_key_outside_its_section_says_where_it_belongs(project, environ):
    path = project / ".runctl.toml"
    assert error(project, environ, "region = 'x'\n") == (
        f"unknown key 'region' in {path}:1; did you mean 'region' under [aws]?")


@pytest.mark.parametrize(("text", "line", "message"), [
    ('use_spot = "yes"', 4, 'aws.use_spot in {}:4 must be a boolean, got string "yes"'),
    ("max_restarts = 2.5", 4, "aws.max_restarts in {}:4 must be an integer, got float 2.5"),
    ("max_restarts = true", 4, "aws.max_restarts in {}:4 must be an integer, got boolean true"),
    ("spot_max_price = true", 4, "aws.spot_max_price in {}:4 must be a number, got boolean true"),
    ('region = 5', 4, "aws.region in {}:4 must be a string, got integer 5"),
    ('subnet_ids = "subnet-a"', 4, 'aws.subnet_ids in {}:4 must be a list of strings, got string "subnet-a"'),
    ("subnet_ids = [1, 2]", 4, "aws.subnet_ids in {}:4 must be a list of strings, got array [1, 2]"),
    ("ami = {id = 'x'}", 4, "aws.ami in {}:4 must be a string, got a table"),
])
def test_wrong_types_name_key_file_line_expected_and_found(project, environ, text, line, message):
    body = f"# runctl\n\n[aws]\n{text}\n"
    assert error(project, environ, body) == message.format(project / ".runctl.toml")


def test_section_that_is_not_a_table(project, environ):
    assert error(project, environ, "aws = 3\n") == (
        f"aws in {project / '.runctl.toml'}:1 must be a table ([aws]), got integer 3")


@pytest.mark.parametrize(("text", "message"), [
    ("[checkpoint]\nkeep_last_n = 0", "checkpoint.keep_last_n in {}:2 must be >= 1, got 0"),
    ("[checkpoint]\nsync_interval = -1", "checkpoint.sync_interval in {}:2 must be >= 0, got -1.0"),
    ("[checkpoint]\nmax_upload_share = 0", "checkpoint.max_upload_share in {}:2 must be > 0, got 0.0"),
    ("[checkpoint]\nmax_upload_share = 1.5",
     "checkpoint.max_upload_share in {}:2 must be at most 1 (a share of the time), got 1.5"),
    ("[checkpoint]\nmax_upload_share = nan", "checkpoint.max_upload_share in {}:2 must be > 0, got nan"),
    ("[local]\ngrace_period = -1", "local.grace_period in {}:2 must be >= 0, got -1.0"),
    ("[local]\nmax_restarts_on_errors = -2", "local.max_restarts_on_errors in {}:2 must be >= 0, got -2"),
    ("[aws]\nspot_max_price = 0.0", "aws.spot_max_price in {}:2 must be > 0, got 0.0"),
    ("[checkpoint]\nsync_interval = nan", "checkpoint.sync_interval in {}:2 must be >= 0, got nan"),
])
def test_out_of_range_values(project, environ, text, message):
    assert error(project, environ, text + "\n") == message.format(project / ".runctl.toml")


def test_stop_signal_must_be_a_signal_name(project, environ):
    assert error(project, environ, "[local]\nstop_signal = 'TERMINATE'\n") == (
        f"local.stop_signal in {project / '.runctl.toml'}:2 must be a signal name such as "
        'SIGTERM or SIGINT, got "TERMINATE"')
    assert load(project, environ, "[local]\nstop_signal = 'SIGUSR1'\n").local.stop_signal == "SIGUSR1"


def test_store_must_be_a_folder_file_or_s3_url(project, environ):
    message = error(project, environ, "[checkpoint]\nstore = 'gs://bucket/x'\n")
    assert message == (f"checkpoint.store in {project / '.runctl.toml'}:2 must be a folder path, "
                       'file:///path or s3://bucket/prefix, got "gs://bucket/x"')
    for url in ("s3://bucket/prefix", "file:///tmp/x", "/abs/folder", "rel/folder"):
        assert load(project, environ, f"[checkpoint]\nstore = '{url}'\n").checkpoint.store == url


def test_empty_strings_are_rejected(project, environ):
    message = error(project, environ, "[aws]\nregion = ''\n")
    assert message.startswith(f"aws.region in {project / '.runctl.toml'}:2 must be a non-empty string")


def test_unreadable_file_is_a_config_error(project, environ):
    (project / ".runctl.toml").write_bytes(b"[aws]\nregion = '\xff'\n")
    assert error(project, environ).startswith(f"cannot read config file {project / '.runctl.toml'}: ")


def test_no_module_level_state(project, environ):
    assert load(project, environ, RUNCTL_AWS_REGION="a").aws.region == "a"
    assert load(project, environ, RUNCTL_AWS_REGION="b").aws.region == "b"
    assert load(project, environ).aws.region == AwsConfig().region


# ---------------------------------------------------------------- the init template

def test_template_loads_and_mentions_every_key(project, environ):
    text = render_template()
    cfg = load(project, environ, text)
    assert cfg.values() == Config().values() and cfg.source_path == project / ".runctl.toml"
    for key in Config().values():
        section, name = key.split(".")
        assert f"[{section}]" in text
        assert re.search(rf"^# {name} = ", text, re.M), key


def test_template_with_every_key_uncommented_loads_with_the_defaults(project, environ):
    uncommented = re.sub(r"^# (\w+ = )", r"\1", render_template(), flags=re.M)
    cfg = load(project, environ, uncommented)
    defaults = Config().values()
    for key, value in cfg.values().items():
        assert value == defaults[key] or defaults[key] is None, key
        assert cfg.origins[key].startswith(f"{project / '.runctl.toml'}:")


def test_template_explains_every_key_on_the_line_above(project, environ):
    lines = render_template().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^# \w+ = ", line):
            assert lines[number - 1].startswith("# ") and not re.match(r"^# \w+ = ", lines[number - 1])


def test_docker_gpus_and_login_take_only_what_they_understand(project, environ):
    path = project / ".runctl.toml"
    assert error(project, environ, "[docker]\ngpus = 'lots'\n") == (
        f'docker.gpus in {path}:2 must be auto, all, none or GPU indexes such as 0,1, got "lots"')
    assert error(project, environ, "[docker]\nlogin = 'basic'\n") == (
        f'docker.login in {path}:2 must be ecr or none, got "basic"')
    for gpus in ("auto", "all", "none", "0", "0,1", "device=2"):
        assert load(project, environ, f"[docker]\ngpus = '{gpus}'\n").docker.gpus == gpus


# ---------------------------------------------------------------- named jobs, [jobs.NAME]

JOBS_TOML = """# my project
[aws]
region = "eu-west-1"

[jobs.train]
script = "train.py"
args = ["--epochs", "10"]
checkpoint_dir = "checkpoints"
resume_args = ["--resume", "{checkpoint}"]
spot = true
max_restarts = 5

[jobs.train.env]
WANDB_PROJECT = "demo"

[jobs.eval]
script = "eval.py"
"""


def test_named_jobs_are_read_with_their_origins(project, environ):
    cfg = load(project, environ, JOBS_TOML)
    path = project / ".runctl.toml"
    train = cfg.job("train")
    assert (train.script, train.args, train.checkpoint_dir, train.resume_args, train.spot, train.max_restarts) == (
        "train.py", ("--epochs", "10"), "checkpoints", ("--resume", "{checkpoint}"), True, 5)
    assert train.env == {"WANDB_PROJECT": "demo"} and train.instance_type is None
    assert cfg.job("eval").script == "eval.py" and cfg.job("eval").env == {}
    assert cfg.origins["jobs.train.script"] == f"{path}:6" and cfg.origins["jobs.train.env"] == f"{path}:13"
    assert cfg.job_values()["jobs.train.args"] == ("--epochs", "10") and "jobs.eval.args" not in cfg.job_values()
    assert cfg.aws.region == "eu-west-1" and cfg.values() == load(project, environ, '[aws]\nregion = "eu-west-1"\n'
                                                                   ).values()


def test_an_unknown_job_names_the_jobs_there(project, environ):
    cfg = load(project, environ, JOBS_TOML)
    with pytest.raises(ConfigError) as info:
        cfg.job("trian")
    assert str(info.value) == f"no job 'trian' in [jobs] in {project / '.runctl.toml'} (jobs there: eval, train)"


@pytest.mark.parametrize("value, read", [("2", "2"), ('"2"', "2"), ('"auto"', "auto"), ('"AUTO"', "auto")])
def test_a_jobs_nproc_per_node_is_a_count_or_auto(project, environ, value, read):
    cfg = load(project, environ, f'[jobs.ddp]\nscript = "train_ddp.py"\nnproc_per_node = {value}\n')
    assert cfg.job("ddp").nproc_per_node == read


def test_a_jobs_nodes_is_read_and_unset_means_none(project, environ):
    assert load(project, environ, '[jobs.ddp]\nscript = "train_ddp.py"\nnodes = 2\n').job("ddp").nodes == 2
    assert load(project, environ, '[jobs.ddp]\nscript = "train_ddp.py"\n').job("ddp").nodes is None


def test_a_job_name_may_hold_dots(project, environ):
    cfg = load(project, environ, '[jobs."train.py"]\nscript = "x.py"\n\n[jobs."train.py".env]\nA = "1"\n')
    assert cfg.job("train.py").script == "x.py" and cfg.job("train.py").env == {"A": "1"}


@pytest.mark.parametrize("text, message", [
    ('[jobs.t]\nscrpit = "x.py"\n', "unknown key 'jobs.t.scrpit' in {path}:2; did you mean 'script'?"),
    ('[jobs.t]\nargs = "--x"\n', 'jobs.t.args in {path}:2 must be a list of strings, got string "--x"'),
    ("[jobs.t]\nmax_restarts = -1\n", "jobs.t.max_restarts in {path}:2 must be >= 0, got -1"),
    ("[jobs.t]\nspot = 'yes'\n", 'jobs.t.spot in {path}:2 must be a boolean, got string "yes"'),
    ('[jobs.t.env]\nA = 1\n', "jobs.t.env in {path}:1 must be a table of strings, got a table"),
    ('[jobs.t.env]\n"A B" = "x"\n', 'jobs.t.env in {path}:1 must be a table of environment variables '
                                    '(NAME = "value"); \'A B\' is no variable name, got {{"A B" = "x"}}'),
    ("jobs = 3\n", "jobs in {path}:1 must be tables of jobs ([jobs.NAME]), got integer 3"),
    ('[jobs."a b"]\nscript = "x"\n', "job name 'a b' in {path}:1: use letters, digits, '.', '_' and '-'"),
    ("[jobs.t]\nnproc_per_node = 0\n", 'jobs.t.nproc_per_node in {path}:2 must be a number of processes (1, 2, 8 ...) '
                                       'or "auto" (one per GPU, else one), got "0"'),
    ("[jobs.t]\nnproc_per_node = 'all'\n", 'jobs.t.nproc_per_node in {path}:2 must be a number of processes '
                                           '(1, 2, 8 ...) or "auto" (one per GPU, else one), got "all"'),
    ("[jobs.t]\nnproc_per_node = true\n", "jobs.t.nproc_per_node in {path}:2 must be a string, got boolean true"),
    ("[jobs.t]\nnodes = 0\n", "jobs.t.nodes in {path}:2 must be >= 1, got 0"),
    ("[jobs.t]\nnodes = '2'\n", 'jobs.t.nodes in {path}:2 must be an integer, got string "2"'),
])
def test_a_bad_job_table_is_one_line_naming_file_line_and_key(project, environ, text, message):
    assert error(project, environ, text) == message.format(path=project / ".runctl.toml")


def test_config_validate_and_show_cover_the_jobs(runctl_cli, tmp_path):
    (tmp_path / ".runctl.toml").write_text(JOBS_TOML)
    shown = runctl_cli("config", "show", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    values = __import__("json").loads(shown.stdout)["values"]
    assert values["jobs.train.resume_args"] == {"value": ["--resume", "{checkpoint}"],
                                                "origin": f"{tmp_path / '.runctl.toml'}:9"}
    (tmp_path / ".runctl.toml").write_text('[jobs.t]\nscrpit = "x.py"\n')
    invalid = runctl_cli("config", "validate")
    assert invalid.returncode == 2
    assert invalid.stderr.strip() == (f"runctl: error: unknown key 'jobs.t.scrpit' in {tmp_path / '.runctl.toml'}:2; "
                                      "did you mean 'script'?")
