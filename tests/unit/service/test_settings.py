from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings, SettingsError


def test_defaults_with_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8000
    assert settings.port_health is None
    assert settings.api_keys == ()
    assert settings.model is None
    assert settings.max_text_chars == 5000
    assert settings.max_queue == 256
    assert settings.max_batch_wait_ms == 0.0
    assert settings.max_queue_wait_s is None
    assert settings.host == "0.0.0.0"


def test_values_come_from_the_documented_names() -> None:
    settings = Settings.from_env(
        {
            "PORT": "80",
            "PORT_HEALTH": "8081",
            "API_KEY": " k1 , k2 ,",
            "CHORUS_MODEL": "/models/voice",
            "CHORUS_MAX_BATCH_SIZE": "32",
            "CHORUS_MAX_BATCH_WAIT_MS": "2.5",
            "CHORUS_MAX_QUEUE_WAIT_S": "1.5",
            "CHORUS_DTYPE": "BF16",
            "CHORUS_LOG_LEVEL": "debug",
        }
    )
    assert (settings.port, settings.port_health) == (80, 8081)
    assert settings.api_keys == ("k1", "k2")
    assert settings.model == "/models/voice"
    assert settings.max_batch_size == 32
    assert settings.max_batch_wait_ms == 2.5
    assert settings.max_queue_wait_s == 1.5
    assert settings.dtype == "bf16"
    assert settings.log_level == "DEBUG"


def test_an_empty_api_key_requires_no_key() -> None:
    assert Settings.from_env({"API_KEY": ""}).api_keys == ()


def test_runpod_api_key_is_never_read() -> None:
    assert Settings.from_env({"RUNPOD_API_KEY": "rp_secret"}).api_keys == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("CHORUS_MAX_QUEUE", "0"),
        ("CHORUS_MAX_BATCH_SIZE", "-3"),
        ("CHORUS_DTYPE", "fp8"),
        ("CHORUS_MAX_BATCH_WAIT_MS", "soon"),
        ("CHORUS_MAX_QUEUE_WAIT_S", "0"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_an_unknown_chorus_variable_is_refused() -> None:
    with pytest.raises(SettingsError, match="CHORUS_MAX_QEUE"):
        Settings.from_env({"CHORUS_MAX_QEUE": "5"})


def test_keys_never_appear_in_the_repr() -> None:
    settings = Settings.from_env({"API_KEY": "super-secret-1,super-secret-2"})
    assert "super-secret" not in repr(settings)
    assert "2 key(s)" in repr(settings)


def test_cache_dir_follows_xdg_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    assert str(Settings.from_env({}).resolved_cache_dir) == "/tmp/xdg/chorus"
    assert str(Settings.from_env({"CHORUS_CACHE_DIR": "/srv/c"}).resolved_cache_dir) == "/srv/c"


@pytest.mark.parametrize(
    ("value", "paths"),
    [
        (None, ("/ping",)),
        ("/ping", ("/ping",)),
        ("/ping/", ("/ping",)),
        ("/health", ("/ping", "/health")),
        ("/internal/health/", ("/ping", "/internal/health")),
    ],
)
def test_runpods_health_check_path_is_answered_beside_ping(value: str | None, paths: tuple[str, ...]) -> None:
    env = {} if value is None else {"HEALTH_CHECK_PATH": value}
    assert Settings.from_env(env).health_paths() == paths


@pytest.mark.parametrize("value", ["/generate", "/v1/models", "/metrics/", "/", "/schema/openapi.json"])
def test_a_health_check_path_on_one_of_chorus_routes_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=r"HEALTH_CHECK_PATH: .* is one of Chorus's own routes"):
        Settings.from_env({"HEALTH_CHECK_PATH": value})


@pytest.mark.parametrize("value", ["health", "/health?x=1", "/he alth", "/{model}"])
def test_a_malformed_health_check_path_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="HEALTH_CHECK_PATH"):
        Settings.from_env({"HEALTH_CHECK_PATH": value})


def test_a_lexicon_that_cannot_be_used_stops_the_start(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"nginx": "engine x"}', encoding="utf-8")
    settings = Settings.from_env({"CHORUS_LEXICON": str(good)})
    lexicon = settings.load_lexicon()
    assert lexicon is not None
    assert lexicon.apply("nginx") == "engine x"
    bad = tmp_path / "bad.json"
    bad.write_text('["nginx"]', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"CHORUS_LEXICON: .*bad\.json: a JSON lexicon is one object"):
        Settings.from_env({"CHORUS_LEXICON": str(bad)})
    with pytest.raises(SettingsError, match="CHORUS_LEXICON: cannot read"):
        Settings.from_env({"CHORUS_LEXICON": str(tmp_path / "missing.pls")})
