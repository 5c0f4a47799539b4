"""leansync.masking: one function masks every secret, by shape or by value."""

import pytest

from leansync import masking


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(masking, "_registered", set())


@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://leansync:s3cret@db/leansync", "postgresql://leansync:***@db/leansync"),
    ("postgresql://leansync@db/leansync?password=s3cret&sslmode=require",
     "postgresql://leansync@db/leansync?password=***&sslmode=require"),
    ("host=db dbname=leansync password='a b\\'c' user=x", "host=db dbname=leansync password=*** user=x"),
    ("https://gw:hunter22@proxy.example.com/api/v2/", "https://gw:***@proxy.example.com/api/v2/"),
    ("https://api.example.com/v2/?token=abcd1234", "https://api.example.com/v2/?token=***"),
    ("sqlite:////var/lib/leansync/leansync.db", "sqlite:////var/lib/leansync/leansync.db"),
    ("postgresql://leansync@db/leansync", "postgresql://leansync@db/leansync"),
])
def test_credentials_by_shape(text, masked):
    assert masking.mask(text) == masked


def test_registered_values_whole_and_url_encoded():
    masking.register("tok/en+value", None, "")
    assert masking.mask("sent tok/en+value and tok%2Fen%2Bvalue") == "sent *** and ***"
    assert masking.mask("nothing here") == "nothing here"
