"""Settings both services read from the environment, with pydantic-settings: one idiom, and the
variables they share (VOICES_DIR, MAX_CONCURRENT_REQUESTS, MAX_TEXT_LENGTH, LOG_LEVEL) parsed once.

A bad value is a SettingsError whose message is one line naming the variable; each service's
`__main__` prints it and exits non-zero, without a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

# The seed's RUST_LOG names; "warn" and "trace" have no direct stdlib spelling.
LogLevel = Literal["critical", "error", "warn", "warning", "info", "debug", "trace"]

S = TypeVar("S", bound="SharedSettings")
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environment", default=None)


class SettingsError(ValueError):
    """An environment variable that cannot be used; the message is one line that names it."""


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of os.environ (load_settings(env=...))."""

    def __init__(self, settings_cls: type[BaseSettings], environment: Mapping[str, str]):
        self._environment = environment
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environment = self._environment
        if not self.case_sensitive:
            environment = {name.lower(): value for name, value in environment.items()}
        if self.env_ignore_empty:
            environment = {name: value for name, value in environment.items() if value.strip() != ""}
        return environment


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", str_strip_whitespace=True)

    voices_dir: str = "./voices"
    max_concurrent_requests: int = Field(3, ge=1)
    max_text_length: int = Field(5000, ge=1)
    log_level: LogLevel = Field("info", validation_alias=AliasChoices("log_level", "rust_log"))
    # Seconds a SIGTERM'd process keeps serving work in flight before ending it (predictor/shutdown.py,
    # adapter/shutdown.py); the chart's terminationGracePeriodSeconds covers preStop plus this.
    drain_timeout_s: float = Field(30.0, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only arguments and the environment (or the mapping load_settings was given): no .env files.
        environment = _ENVIRONMENT.get()
        return (init_settings, env_settings if environment is None else _MappingEnvSource(settings_cls, environment))

    @property
    def uvicorn_log_level(self) -> str:
        """The level as uvicorn spells it (it knows trace; warn is warning)."""
        return "warning" if self.log_level == "warn" else self.log_level

    @property
    def logging_level(self) -> int:
        """The stdlib logging level (trace is DEBUG: the stdlib has nothing finer)."""
        return logging.DEBUG if self.log_level == "trace" else getattr(logging, self.uvicorn_log_level.upper())


@contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)


def load_settings(cls: type[S], env: Mapping[str, str] | None = None, **values: Any) -> S:
    """`cls` from the environment (or `env`, for tests), `values` taking precedence; SettingsError
    with one line naming the variable when a value cannot be used."""
    try:
        with _environment(env):
            return cls(**values)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem, as `NAME='value': what is wrong` (or the message of a cross-field check)."""
    err = exc.errors()[0]
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if not err.get("loc"):
        return message
    name = str(err["loc"][0]).upper()
    value = err.get("input")
    if isinstance(value, str):
        return f"{name}={value!r}: {message}"
    return f"{name}: {message}"
