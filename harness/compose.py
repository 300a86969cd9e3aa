"""docker-compose.yml read the way `docker compose` reads it: YAML anchors and merge keys, then
${VAR} interpolation from an environment.

So the tests and the multi-host rehearsal start Redis, workers and Flower with the compose file's
own command lines, without Docker: what they check is what a user runs.
"""

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from common.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
TLS_OVERRIDE_FILE = REPO_ROOT / "docker-compose.redis-tls.yml"
S3_OVERRIDE_FILE = REPO_ROOT / "docker-compose.s3.yml"
OVERRIDE_FILES = (TLS_OVERRIDE_FILE, S3_OVERRIDE_FILE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_compose(path: Path = COMPOSE_FILE, env: dict | None = None) -> dict:
    """The compose file with every string interpolated from env (the process environment if None)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return interpolate_all(raw, {} if env is None else env)


def interpolate_all(value, env: dict):
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [interpolate_all(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate_all(v, env) for k, v in value.items()}
    return value


def interpolate(text: str, env: dict) -> str:
    """$$ -> $, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
    ${VAR:+alt}, ${VAR+alt}; defaults may hold further ${...}."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2:end], env))
            i = end + 1
        else:
            match = _NAME.match(text, i + 1)
            if not match:
                raise ConfigError(f"invalid interpolation at {text[i:i + 20]!r} in {text!r}")
            out.append(env.get(match.group(), ""))
            i = match.end()
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ConfigError(f"unclosed ${{ in {text!r}")


def _expand(body: str, env: dict) -> str:
    match = _NAME.match(body)
    if not match:
        raise ConfigError(f"invalid variable name in ${{{body}}}")
    name, rest = match.group(), body[match.end():]
    value = env.get(name)
    empty_counts = rest.startswith(":")  # ":-" treats an empty value like an unset one
    op, arg = (rest[1:2], rest[2:]) if empty_counts else (rest[:1], rest[1:])
    is_set = value is not None and (value != "" or not empty_counts)
    if op == "":
        return value or ""
    if op == "-":
        return value if is_set else interpolate(arg, env)
    if op == "?":
        if not is_set:
            raise ConfigError(f"{name}: {interpolate(arg, env) or 'required'}")
        return value
    if op == "+":
        return interpolate(arg, env) if is_set else ""
    raise ConfigError(f"unsupported interpolation ${{{body}}}")


def service(compose: dict, name: str) -> dict:
    try:
        return compose["services"][name]
    except KeyError:
        raise ConfigError(f"docker-compose.yml has no service {name!r}") from None


def command(compose: dict, name: str) -> list[str]:
    """A service's command as an argument list (the compose file writes them as lists)."""
    argv = service(compose, name)["command"]
    if not isinstance(argv, list):
        raise ConfigError(f"service {name}: write its command as a list, not a shell string")
    return [str(a) for a in argv]


def option(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in an argument list (the last one wins, as in the CLIs)."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
    return values[-1] if values else None


def replace_option(argv: list[str], flag: str, value: str) -> list[str]:
    """argv with `flag value` set: replaced where present, appended otherwise."""
    out, i, done = [], 0, False
    while i < len(argv):
        if argv[i] == flag and i + 1 < len(argv):
            out += [flag, value]
            i += 2
            done = True
        else:
            out.append(argv[i])
            i += 1
    return out if done else out + [flag, value]


def worker_services(compose: dict, profile: str | None = None) -> list[str]:
    """Services that run `workers start` (the shard workers and the compile worker)."""
    names = []
    for name, spec in compose["services"].items():
        argv = spec.get("command") or []
        if argv[:2] == ["workers", "start"] and (profile is None or profile in spec.get("profiles", [])):
            names.append(name)
    return names


@dataclass
class ComposeRedis:
    """redis-server run with the compose file's own command line on this machine. Only what is
    container-specific is local: where it listens (port, address), its data folder, and the
    certificate folder (/tls/ in the compose file)."""

    argv: list[str]  # the redis service's interpolated command, "redis-server" first
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    tls_dir: Path | None = None
    launcher: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", "store")
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return "--tls-port" in self.argv

    @property
    def password(self) -> str:
        return option(self.argv, "--requirepass") or ""

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://:{self.password}@{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10) -> "ComposeRedis":
        from harness.cluster import free_port

        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [a.replace("/tls/", f"{self.tls_dir}/") if self.tls_dir else a for a in self.argv]
        listen = ["--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        self.process = subprocess.Popen([*self.launcher, *argv, *listen, "--bind", self.host, "--dir", str(self.workdir)],
                                        stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {(self.workdir / 'redis.log').read_text()[-2000:]}")

    def client(self) -> redis.Redis:
        tls = {"ssl_ca_certs": str(self.tls_dir / "ca.crt")} if self.tls else {}
        return redis.Redis.from_url(self.url, socket_connect_timeout=1, **tls)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
