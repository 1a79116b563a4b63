"""runctl.job_env: --env and --secret items and secret references, parsed and checked."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from runctl.errors import UsageError
from runctl.job_env import check_references, parse_pairs, parse_reference


def test_pairs_keep_everything_after_the_first_equals_sign_and_the_last_of_a_name_wins():
    assert parse_pairs(["A=1", "URL=http://x?a=b", "EMPTY=", "A=2"], "--env") == {
        "A": "2", "URL": "http://x?a=b", "EMPTY": ""}


@pytest.mark.parametrize("item, said", [
    ("hidden", "--env: an item has no '=' (not shown: it may be a value); give KEY=VALUE"),
    ("=hidden", "--env =...: '' is no variable name"),
    ("1X=hidden", "--env 1X=...: '1X' is no variable name"),
    ("A-B=hidden", "--env A-B=...: 'A-B' is no variable name"),
])
def test_a_bad_env_item_is_one_line_naming_it_without_its_value(item, said):
    with pytest.raises(UsageError) as caught:
        parse_pairs([item], "--env")
    assert str(caught.value).startswith(said)
    assert "hidden" not in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("item, said", [
    ("hunter2", "--secret: an item has no '='"),
    ("TOKEN=hunter2", "--secret TOKEN=...: not a secret reference (ssm:/path/to/parameter or "
                      "secretsmanager:SECRET_ID)"),
    ("TOKEN=vault:hunter2", "--secret TOKEN=...: not a secret reference"),
    ("TOKEN=ssm:", "'ssm:' is followed by no parameter name"),
    ("TOKEN=secretsmanager: x", "'secretsmanager:' is followed by no secret name"),
    ("TOKEN=ssm:arn:aws:secretsmanager:us-east-1:1:secret:x", "the ARN after 'ssm:' is not one of ssm"),
    ("9=ssm:/x", "'9' is no variable name"),
])
def test_a_bad_secret_item_says_what_a_reference_looks_like_never_echoing_a_value(item, said):
    with pytest.raises(UsageError) as caught:
        parse_pairs([item], "--secret", references=True)
    assert said in str(caught.value) and "hunter2" not in str(caught.value)
    assert str(caught.value).endswith("give NAME=ssm:/path/to/parameter or NAME=secretsmanager:SECRET_ID")


def test_references_and_the_region_an_arn_names():
    assert parse_pairs(["T=ssm:/runctl/t", "S=secretsmanager:runctl/s"], "--secret", references=True) == {
        "T": "ssm:/runctl/t", "S": "secretsmanager:runctl/s"}
    plain = parse_reference("ssm:/runctl/t")
    assert (plain.kind, plain.ident, plain.region, str(plain)) == ("ssm", "/runctl/t", None, "ssm:/runctl/t")
    arn = parse_reference("secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:runctl/s-AbCdEf")
    assert arn.region == "eu-west-1"
    assert parse_reference("ssm:arn:aws:ssm:us-west-2:123456789012:parameter/runctl/t").region == "us-west-2"


def test_a_secrets_table_is_checked_whole():
    assert check_references({"T": "ssm:/x"}) == {"T": "ssm:/x"}
    with pytest.raises(ValueError, match="^a table of secret references .*; U: not a secret reference") as caught:
        check_references({"T": "ssm:/x", "U": "hunter2"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="'bad name' is no variable name"):
        check_references({"bad name": "ssm:/x"})


@given(name=st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), value=st.text(min_size=6))
def test_no_error_about_an_item_shows_its_value(name, value):
    template = ("--secret: an item has no '=' (not shown: it may be a value); give NAME=ssm:/path/to/parameter or "
                "NAME=secretsmanager:SECRET_ID ... not a secret reference 'ssm:' 'secretsmanager:' is followed by no "
                "parameter secret name the ARN after is not one of")
    assume(value not in template and value not in name)
    for item, references in ((f"{name}={value}", True), (value, True), (value, False)):
        try:
            parse_pairs([item], "--secret" if references else "--env", references=references)
        except UsageError as exc:
            assert value not in str(exc)
