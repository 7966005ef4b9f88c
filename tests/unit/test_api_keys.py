"""Sealing the broker API key: pure, no database."""

import pytest

from database.order_queue.api_keys import CredentialsUnavailable, KeySealing, mask
from tests.conftest import TEST_SEALING

KEY = "k" * 60 + "AbCd"


def test_a_sealed_key_opens_with_the_same_pepper_and_hides_the_key():
    token = TEST_SEALING.seal(KEY)
    assert KEY not in token and TEST_SEALING.unseal(token) == KEY


def test_another_pepper_cannot_open_it():
    token = TEST_SEALING.seal(KEY)
    with pytest.raises(CredentialsUnavailable):
        KeySealing("another pepper of at least 32 characters").unseal(token)


def test_the_account_id_is_stable_per_key_and_tells_keys_apart():
    _, account = TEST_SEALING.seal_with_account(KEY)
    assert TEST_SEALING.seal_with_account(KEY)[1] == account and len(account) == 16
    assert TEST_SEALING.seal_with_account("x" * 64)[1] != account
    assert KEY not in account


def test_the_account_id_depends_on_the_pepper():
    other = KeySealing("another pepper of at least 32 characters")
    assert other.seal_with_account(KEY)[1] != TEST_SEALING.seal_with_account(KEY)[1]


def test_a_pepper_too_short_is_refused():
    with pytest.raises(CredentialsUnavailable, match="API_KEY_PEPPER"):
        KeySealing("short")


@pytest.mark.parametrize("key, shown", [(KEY, "****AbCd"), ("short", "****"), (None, "")])
def test_masking_keeps_only_the_last_four(key, shown):
    assert mask(key) == shown


def test_no_pepper_or_key_is_held_at_module_level():
    """Only a ``KeySealing`` holds its pepper: the module keeps no cache of peppers,
    derived keys or sealed API keys that outlives the object."""
    from database.order_queue import api_keys

    sealing = api_keys.KeySealing("p" * 40)
    sealing.seal_with_account("k" * 64)
    assert not [name for name, value in vars(api_keys).items() if hasattr(value, "cache_info")]


def test_the_sealed_keys_kept_are_bounded():
    from database.order_queue import api_keys

    sealing = api_keys.KeySealing("p" * 40)
    for n in range(api_keys.SEALED_KEPT + 50):
        sealing.seal_with_account(f"{n:064d}")
    assert len(sealing._sealed) == api_keys.SEALED_KEPT
    assert sealing.seal_with_account(f"{0:064d}")[1] == sealing.seal_with_account(f"{0:064d}")[1]
