"""relay.users and `dane-relay user`: the users file of salted scrypt hashes."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from relay import cli
from relay.users import (
    AuthCheck,
    ScryptHash,
    UsersFileError,
    UserStore,
    add_user,
    format_users,
    hash_password,
    name_problem,
    parse_users,
    read_users,
    remove_user,
    verify_password,
)

FAST = 4  # log2 N for tests: scrypt's cost is irrelevant to what is tested


def test_hash_round_trip_and_verify() -> None:
    hashed = hash_password(b"correct horse", log2_n=FAST)
    assert str(hashed).startswith("$scrypt$ln=4,r=8,p=1$")
    parsed = ScryptHash.parse(str(hashed))
    assert parsed == hashed
    assert verify_password(parsed, b"correct horse")
    assert not verify_password(parsed, b"correct horse ")
    assert not verify_password(None, b"anything")  # unknown user: no match, same cost


def test_salt_is_per_hash() -> None:
    first, second = hash_password(b"same", log2_n=FAST), hash_password(b"same", log2_n=FAST)
    assert first.salt != second.salt
    assert first.digest != second.digest


def test_known_vector() -> None:
    # RFC 7914 §12, second vector: P="password", S="NaCl", N=1024, r=8, p=16 (first 32 octets).
    vector = ScryptHash(10, 8, 16, b"NaCl", b"")
    assert vector.derive(b"password").hex() == (
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$scrypt$ln=14,r=8,p=1$c2FsdA$", "not a \\$scrypt"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA", "not a \\$scrypt"),
        ("$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43, "out of range"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaA", "must be 32 octets"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdA$" + "A" * 43, "salt at least 8"),
        ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$" + "A" * 41, "not base64"),
    ],
)
def test_bad_hash_strings(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScryptHash.parse(text)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("alice", None),
        ("alice@example.org", None),
        ("jürgen", None),
        ("", "the user name is empty"),
        ("a" * 256, "the user name is longer than 255 characters"),
        ("a:b", "has a space, a ':' or a control character"),
        ("a b", "has a space, a ':' or a control character"),
        ("a\tb", "has a space, a ':' or a control character"),
        ("a\x00b", "has a space, a ':' or a control character"),
    ],
)
def test_name_problem(name: str, problem: str | None) -> None:
    found = name_problem(name)
    assert found == problem if problem is None else problem in (found or "")


def test_parse_and_format() -> None:
    users = {"bob": hash_password(b"b", log2_n=FAST), "alice": hash_password(b"a", log2_n=FAST)}
    text = format_users(users)
    assert text.startswith("# dane-relay users:")
    assert text.splitlines()[1].startswith("alice:$scrypt$")  # sorted
    assert parse_users("\n  \n# comment\n" + text) == users


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice", "line 1: expected NAME:HASH"),
        ("# c\nalice:nope", "line 2: user 'alice': not a"),
        ("a b:$scrypt$", "line 1: the user name 'a b'"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UsersFileError, match=message):
        parse_users(text, "users")


def test_duplicate_user_is_an_error() -> None:
    line = f"alice:{hash_password(b'x', log2_n=FAST)}\n"
    with pytest.raises(UsersFileError, match="line 2: user 'alice' appears twice"):
        parse_users(line + line)


def test_add_change_remove(tmp_path: Path) -> None:
    path = tmp_path / "users"
    assert add_user(path, "alice", b"one") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert add_user(path, "bob", b"two") is False
    assert add_user(path, "alice", b"three") is True  # password changed
    users = read_users(path)
    assert sorted(users) == ["alice", "bob"]
    assert verify_password(users["alice"], b"three")
    assert remove_user(path, "bob") is True
    assert remove_user(path, "bob") is False
    assert sorted(read_users(path)) == ["alice"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    leftovers = {p.name for p in tmp_path.iterdir()}
    assert leftovers == {"users", "users.lock"}  # no temporary files left behind


def test_add_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="':'"):
        add_user(tmp_path / "users", "a:b", b"x")
    with pytest.raises(UsersFileError, match="empty"):
        add_user(tmp_path / "users", "alice", b"")
    assert not (tmp_path / "users").exists()


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="no such users file"):
        read_users(tmp_path / "absent")
    assert read_users(tmp_path / "absent", missing_ok=True) == {}


def _write(path: Path, **passwords: str) -> None:
    users = {name: hash_password(pw.encode(), log2_n=FAST) for name, pw in passwords.items()}
    path.write_text(format_users(users))


def test_store_checks_and_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    _write(path, alice="secret")
    store = UserStore(path)
    assert store.check(b"alice", b"secret") is AuthCheck.ACCEPTED
    assert store.check(b"alice", b"wrong") is AuthCheck.REJECTED
    assert store.check(b"mallory", b"secret") is AuthCheck.REJECTED
    assert store.check(b"\xff", b"secret") is AuthCheck.REJECTED  # not UTF-8
    _write(path.with_name("new"), alice="changed", bob="b")
    path.with_name("new").replace(path)  # as write_users does
    assert store.check(b"alice", b"secret") is AuthCheck.REJECTED
    assert store.check(b"bob", b"b") is AuthCheck.ACCEPTED
    path.write_text("broken line\n")
    assert store.check(b"bob", b"b") is AuthCheck.UNAVAILABLE  # fail closed: 454
    path.unlink()
    assert store.check(b"bob", b"b") is AuthCheck.UNAVAILABLE
    _write(path, bob="b")
    assert store.check(b"bob", b"b") is AuthCheck.ACCEPTED  # repaired: works again


def test_store_refuses_to_start_without_file(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="dane-relay user add"):
        UserStore(tmp_path / "absent")


# -- dane-relay user ------------------------------------------------------------------------


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: bytes = b""
) -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_add_list_del(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "users")
    code, out, _ = run(
        ["user", "add", "alice", "--users-file", path, "--password-stdin"], capsys, b"pw one\n"
    )
    assert (code, out) == (0, f"added user alice in {path}\n")
    assert verify_password(read_users(Path(path))["alice"], b"pw one")  # newline stripped only
    code, out, _ = run(
        ["user", "add", "alice", "--users-file", path, "--password-stdin"], capsys, b"pw2\r\n"
    )
    assert code == 0 and "changed the password" in out
    assert verify_password(read_users(Path(path))["alice"], b"pw2")
    assert run(["user", "list", "--users-file", path], capsys)[:2] == (0, "alice\n")
    assert run(["user", "del", "alice", "--users-file", path], capsys)[0] == 0
    assert run(["user", "list", "--users-file", path], capsys)[:2] == (0, "")


def test_cli_prompts_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["typed", "typed"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, _ = run(["user", "add", "carol", "--users-file", str(tmp_path / "u")], capsys)
    assert code == 0
    assert verify_password(read_users(tmp_path / "u")["carol"], b"typed")
    answers = iter(["one", "two"])
    code, _, err = run(["user", "add", "carol", "--users-file", str(tmp_path / "u")], capsys)
    assert (code, err) == (2, "dane-relay: the passwords differ\n")


@pytest.mark.parametrize(
    ("argv", "stdin", "error"),
    [
        (["user", "add", "a:b", "--password-stdin"], b"x\n", "the user name 'a:b' has a space"),
        (["user", "add", "alice", "--password-stdin"], b"\n", "the password is empty"),
        (["user", "add", "alice", "--password-stdin"], b"", "the password is empty"),
        (["user", "del", "nobody"], b"", "no user 'nobody'"),
        (["user", "list"], b"", "no such users file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: bytes,
    error: str,
) -> None:
    if argv[1] == "del":
        add_user(tmp_path / "users", "alice", b"x")
    code, _, err = run([*argv, "--users-file", str(tmp_path / "users")], capsys, stdin)
    assert code == 2
    assert err.count("\n") == 1 and error in err


def test_cli_needs_a_users_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["user", "list"], capsys)
    assert (code, err) == (
        2,
        "dane-relay: say which users file: --users-file FILE or --config FILE\n",
    )
    config = tmp_path / "relay.toml"
    config.write_text("")
    code, _, err = run(["user", "list", "--config", str(config)], capsys)
    assert code == 2 and "listen.users_file" in err
