"""Sealing the broker API key: pure, no database."""

import pytest

from database.order_queue.api_keys import (
    CredentialsUnavailable,
    mask,
    seal,
    seal_with_account,
    unseal,
    use_pepper,
)
from tests.conftest import TEST_PEPPER

KEY = "k" * 60 + "AbCd"


def test_a_sealed_key_opens_with_the_same_pepper_and_hides_the_key():
    token = seal(KEY)
    assert KEY not in token and unseal(token) == KEY


def test_another_pepper_cannot_open_it():
    token = seal(KEY)
    use_pepper("another pepper of at least 32 characters")
    try:
        with pytest.raises(CredentialsUnavailable):
            unseal(token)
    finally:
        use_pepper(TEST_PEPPER)


def test_the_account_id_is_stable_per_key_and_tells_keys_apart():
    _, account = seal_with_account(KEY)
    assert seal_with_account(KEY)[1] == account and len(account) == 16
    assert seal_with_account("x" * 64)[1] != account
    assert KEY not in account


def test_a_pepper_too_short_is_refused():
    with pytest.raises(CredentialsUnavailable, match="API_KEY_PEPPER"):
        use_pepper("short")


@pytest.mark.parametrize("key, shown", [(KEY, "****AbCd"), ("short", "****"), (None, "")])
def test_masking_keeps_only_the_last_four(key, shown):
    assert mask(key) == shown
