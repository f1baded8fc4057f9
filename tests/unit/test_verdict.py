import pytest

from verifier.verdict import Reason, Tier, Verdict, VerificationError


def test_verdict_is_not_a_bool() -> None:
    verdict = Verdict.affirming({"tpm.quote.signature"})
    with pytest.raises(TypeError):
        bool(verdict)
    assert verdict.affirms


def test_contraindicated_verdict_must_say_why() -> None:
    with pytest.raises(ValueError, match="must say why"):
        Verdict(Tier.CONTRAINDICATED)
    with pytest.raises(ValueError, match="no failure reasons"):
        Verdict(Tier.AFFIRMING, (Reason("x.y"),))


def test_verification_error_becomes_a_named_verdict() -> None:
    error = VerificationError(Reason("tpm.quote.nonce_mismatch", "d"), {"tpm.quote.parse"})
    verdict = error.to_verdict()
    assert verdict.tier is Tier.CONTRAINDICATED
    assert verdict.reason_codes() == ("tpm.quote.nonce_mismatch",)
    assert verdict.checks_run == frozenset({"tpm.quote.parse"})
    assert not verdict.affirms
