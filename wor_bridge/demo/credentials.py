"""The demo's own keys and secrets: they exist only in the configuration the demo writes.

The shipped example configuration (``config/wor-bridge.toml``) holds no working key or secret.
``with_demo_credentials`` adds the demo's to its text: the SHA-256 of each example client's key,
the ZorgDomein-style destination's bearer token and the signed-JSON webhook (with its secret).
The tests use the same, so the keys below are published and must never reach a real deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from wor_bridge.service.auth import hash_key
from wor_bridge.shipped import shipped

CLIENT_KEYS: Final = {
    "his-example": "example-his-key",
    "welzijn-voorbeeld-system": "example-welfare-key",
    "viplive-receiver": "example-pull-secret",
    "zorgdomein-system": "example-zorgdomein-key",
    "ops": "example-admin-key",
}
"""Client id -> its demo key (the bearer key, or the notified-pull client secret)."""
HIS_KEY: Final = CLIENT_KEYS["his-example"]
ADMIN_KEY: Final = CLIENT_KEYS["ops"]
WELFARE_KEY: Final = CLIENT_KEYS["welzijn-voorbeeld-system"]
PULL_SECRET: Final = CLIENT_KEYS["viplive-receiver"]
ZORGDOMEIN_TOKEN: Final = "example-zorgdomein-token"  # noqa: S105 - the demo's, published
WEBHOOK_SECRET: Final = "example-webhook-secret"  # noqa: S105 - the demo's, published
WEBHOOK: Final = f"""
# The demo's signed-JSON webhook (POST /feedback/welzijn-json)
[[webhooks]]
id = "welzijn-json"
secret = "{WEBHOOK_SECRET}"
destination = "welzijn-voorbeeld"
mapping = "welzijn-json"
replay_window_s = 300.0
"""


def _after(text: str, line: str, added: str) -> str:
    if text.count(line) != 1:
        raise ValueError(f"the example configuration must have {line!r} exactly once")
    return text.replace(line, f"{line}\n{added}", 1)


def with_demo_credentials(text: str) -> str:
    """The example configuration ``text`` with the demo's keys and secrets added.

    Raises ``ValueError`` when ``text`` lacks an entry the demo gives a credential to.
    """
    for client_id, key in CLIENT_KEYS.items():
        text = _after(text, f'id = "{client_id}"', f'key_sha256 = "{hash_key(key)}"')
    bearer = f'auth = {{ type = "bearer", token = "{ZORGDOMEIN_TOKEN}" }}'
    text = _after(text, 'id = "welzijn-zorgdomein"', bearer)
    return text + WEBHOOK


def write_demo_configuration(folder: Path, text: str | None = None) -> Path:
    """Write ``text`` (default: ``demo_configuration()``) as ``folder/wor-bridge.toml`` with the
    shipped mappings named by their absolute path; returns the file's path."""
    text = demo_configuration() if text is None else text
    mappings = f'mappings_dir = "{shipped("mappings")}"'
    path = folder / "wor-bridge.toml"
    path.write_text(text.replace('mappings_dir = "../mappings"', mappings), encoding="utf-8")
    return path


def demo_configuration() -> str:
    """The shipped example configuration's text with the demo's credentials."""
    return with_demo_credentials(shipped("config", "wor-bridge.toml").read_text(encoding="utf-8"))
