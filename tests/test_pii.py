"""PII masking (pipelines.steps.pii): FineWeb's placeholders, public IPv4 only, counts per document."""
from __future__ import annotations

import pytest

from pipelines.steps.pii import EMAIL_PLACEHOLDERS, IP_PLACEHOLDERS, is_public_ip, mask_pii


def test_emails_replaced_in_turn_and_counted():
    text = "Write to alice@uni-bonn.de or bob.smith+news@mail.example.co.uk, or alice@uni-bonn.de again."
    out, n_emails, n_ips = mask_pii(text)
    assert (n_emails, n_ips) == (3, 0)
    assert "alice" not in out and "bob.smith" not in out
    assert out == (f"Write to {EMAIL_PLACEHOLDERS[0]} or {EMAIL_PLACEHOLDERS[1]}, or {EMAIL_PLACEHOLDERS[0]} again.")


def test_email_case_insensitive_where_fineweb_misses():
    out, n, _ = mask_pii("Contact: John.Doe@Example.COM.")
    assert n == 1 and out == f"Contact: {EMAIL_PLACEHOLDERS[0]}."


@pytest.mark.parametrize("text", [
    "no at sign here",
    "twitter handle @someone and a decorator @property",
    "user@localhost is not a routable address",   # no dot in the domain
    "price 5 @ 3.99 each",
])
def test_non_emails_untouched(text):
    assert mask_pii(text) == (text, 0, 0)


def test_public_ips_masked_private_and_reserved_kept():
    text = ("dns 8.8.8.8, web 93.184.216.34; lan 192.168.1.10, 10.0.0.1, 172.16.5.4; "
            "loopback 127.0.0.1; link-local 169.254.1.1; docs 203.0.113.7; cgnat 100.64.0.1; any 0.0.0.0")
    out, n_emails, n_ips = mask_pii(text)
    assert (n_emails, n_ips) == (0, 2)
    assert "8.8.8.8" not in out and "93.184.216.34" not in out
    assert out.startswith(f"dns {IP_PLACEHOLDERS[0]}, web {IP_PLACEHOLDERS[1]};")
    for kept in ("192.168.1.10", "10.0.0.1", "172.16.5.4", "127.0.0.1", "169.254.1.1", "203.0.113.7",
                 "100.64.0.1", "0.0.0.0"):
        assert kept in out


@pytest.mark.parametrize("text", [
    "OID 1.3.6.1.4.1.311 names a vendor",       # longer dotted number: not an IP
    "version 2.10.4.31.1 released",
    "value 1.2.3.456 is not an address",
    "256.1.1.1 has an octet out of range",
    "a float 3.14 and a date 2024.01.02",
])
def test_dotted_numbers_that_are_not_ips(text):
    assert mask_pii(text) == (text, 0, 0)


def test_ip_at_sentence_end_and_in_url():
    out, _, n = mask_pii("Server at 8.8.4.4. See http://1.1.1.1:8080/x")
    assert n == 2 and out == f"Server at {IP_PLACEHOLDERS[0]}. See http://{IP_PLACEHOLDERS[1]}:8080/x"


def test_email_with_ip_literal_counts_once_as_email():
    out, n_emails, n_ips = mask_pii("root@[8.8.8.8]")
    assert (n_emails, n_ips) == (1, 0) and out == EMAIL_PLACEHOLDERS[0]


def test_deterministic_per_document_and_idempotent():
    text = "a@b.org 8.8.8.8 c@d.org 1.1.1.1"
    first = mask_pii(text)
    assert mask_pii(text) == first                      # no state carried between calls
    again = mask_pii(first[0])
    assert again == (first[0], 0, 0)                    # placeholders are not masked or counted again


def test_placeholders_are_what_fineweb_uses():
    assert EMAIL_PLACEHOLDERS == ("email@example.com", "firstname.lastname@example.org")
    assert len(IP_PLACEHOLDERS) == 6 and all(is_public_ip(ip) for ip in IP_PLACEHOLDERS)


def test_markdown_emphasis_and_mailto_keep_their_punctuation():
    out, n, _ = mask_pii("**bob@corp.io** and [mail](mailto:eve@corp.io) and --al@corp.io")
    assert n == 3
    assert out == (f"**{EMAIL_PLACEHOLDERS[0]}** and [mail](mailto:{EMAIL_PLACEHOLDERS[1]}) and "
                   f"--{EMAIL_PLACEHOLDERS[0]}")


def test_long_base64_run_with_an_at_sign_stays_linear():
    """A 1 MB inline image and one address: FineWeb's leading \\b made this quadratic (~30 min); the
    run-start anchor makes it one pass. No timing assert: a regression simply does not finish."""
    import base64

    blob = base64.b64encode(bytes(range(256)) * 3000).decode()   # ~1 MB of [A-Za-z0-9+/=]
    out, n, _ = mask_pii(f"![img](data:image/png;base64,{blob}) write to me@x.org")
    assert n == 1 and out.endswith(f"write to {EMAIL_PLACEHOLDERS[0]}") and blob in out
