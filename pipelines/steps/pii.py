"""PII masking: e-mail addresses and public IP addresses replaced with fixed placeholders.

A pure text transform meant to run before tokenization (after reading, before the filters), so the
shards never hold the original addresses. It follows FineWeb's ``PIIFormatter`` (datatrove,
``pipeline/formatters/pii.py``; FineWeb blog, "PII anonymization"):

- Placeholders are FineWeb's: e-mails become ``email@example.com`` / ``firstname.lastname@example.org``
  (example.com/.org are reserved for documentation by RFC 2606) and IPs become one of six addresses
  that FineWeb generated at random and found unresponsive. FineWeb cycles through each list with a
  counter kept across documents; here the cycle restarts with every document (the first address in a
  document gets the first placeholder, the second the next, ...), so the output depends on the text
  alone: the same document masks the same way on any worker, in any bundle order, on every re-run.
- Only public IPv4 addresses are masked (``ipaddress.ip_address(x).is_global``): private (10/8,
  172.16/12, 192.168/16), loopback, link-local, reserved, documentation and shared (CGNAT) ranges are
  not personal and often carry meaning (``127.0.0.1`` in a tutorial). IPv6 is not handled (FineWeb
  does not either).

Three deliberate departures from FineWeb's patterns, to cut misses, false hits and run time:

- E-mail matching ignores case. FineWeb's pattern is lower-case only, so ``John.Doe@Example.COM``
  survives it (its local part cannot start after a capital, its domain cannot contain one).
- A dotted quad counts as an IP only when it is not part of a longer dotted number: FineWeb's pattern
  has no boundaries, so it masks the first four parts of an OID or version string such as
  ``1.3.6.1.4.1`` or ``2.10.4.3.1`` and the prefix of ``1.2.3.456`` (as ``1.2.3.45``).
- An e-mail match starts only where a run of local-part characters starts (see ``_EMAIL``), which keeps
  the scan linear; the matches are the same except inside malformed runs such as ``a..b@x.org``.

E-mails are masked before IPs (as FineWeb), so an e-mail with an IP-literal domain counts once, as an
e-mail. The placeholders themselves are left alone, so masking twice changes nothing and counts nothing
the second time.
"""
from __future__ import annotations

import ipaddress
import re

EMAIL_PLACEHOLDERS: tuple[str, ...] = ("email@example.com", "firstname.lastname@example.org")
IP_PLACEHOLDERS: tuple[str, ...] = (
    "22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168",
)

# RFC 5322 "dot-atom" local part @ (DNS-label domain | [IPv4 literal]), case-insensitive.
# A match may only start where a run of local-part characters starts (the lookbehind): FineWeb's
# leading ``\b`` lets the engine retry at every word boundary inside a run, and a base64 image or a
# long URL is one long run of such characters (letters, digits, "+", "/", "=", "-" ...), so one "@"
# anywhere in the document made the scan quadratic in the run's length (a 20 kB inline image took
# 0.6 s, a 1 MB one half an hour). Leading punctuation of a run ("**" of Markdown bold, "--") is kept
# outside the address, as FineWeb's ``\b`` keeps it.
_ATOM_CHARS = r"a-z0-9!#$%&'*+/=?^_`{|}~-"
_ATOM = rf"[{_ATOM_CHARS}]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_EMAIL = re.compile(
    rf"(?<![.{_ATOM_CHARS}])(?P<lead>[!#$%&'*+/=?^`{{|}}~.-]*)"
    rf"(?P<email>[a-z0-9_][{_ATOM_CHARS}]*(?:\.{_ATOM})*@(?:(?:{_LABEL}\.)+{_LABEL}|\[(?:{_OCTET}\.){{3}}{_OCTET}\]))",
    re.IGNORECASE,
)
# Candidates: four dotted 1-3 digit groups, not preceded by a digit or a dot, not followed by a digit or
# by ".<digit>" (a longer dotted number). Octet ranges are left to ``ipaddress`` (which also refuses
# leading zeros): a plain digit class scans ~2.5x faster than spelling 0-255 out in the pattern.
_IPV4 = re.compile(r"(?<![0-9.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9]|\.[0-9])")


def is_public_ip(candidate: str) -> bool:
    """True for a globally routable IPv4 address (``ipaddress``'s ``is_global``)."""
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:
        return False


def mask_emails(text: str) -> tuple[str, int]:
    """Replace every e-mail address; returns the new text and the number replaced."""
    if "@" not in text:
        return text, 0
    n = 0

    def repl(m: re.Match) -> str:
        nonlocal n
        if m.group("email") in EMAIL_PLACEHOLDERS:  # already masked: idempotent, counted once
            return m.group(0)
        n += 1
        return m.group("lead") + EMAIL_PLACEHOLDERS[(n - 1) % len(EMAIL_PLACEHOLDERS)]

    return _EMAIL.sub(repl, text), n


def mask_public_ips(text: str) -> tuple[str, int]:
    """Replace every public IPv4 address (private, loopback, reserved ... stay); text and count."""
    if text.count(".") < 3:
        return text, 0
    n = 0

    def repl(m: re.Match) -> str:
        nonlocal n
        if m.group(0) in IP_PLACEHOLDERS or not is_public_ip(m.group(0)):
            return m.group(0)
        n += 1
        return IP_PLACEHOLDERS[(n - 1) % len(IP_PLACEHOLDERS)]

    return _IPV4.sub(repl, text), n


def mask_pii(text: str) -> tuple[str, int, int]:
    """E-mails, then public IPv4 addresses, replaced by FineWeb's placeholders.

    Returns ``(masked_text, n_emails, n_ips)``; the text is returned unchanged (the same object) when
    nothing matched.
    """
    text, n_emails = mask_emails(text)
    text, n_ips = mask_public_ips(text)
    return text, n_emails, n_ips
