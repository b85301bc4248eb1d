"""Normalised keys for searching and de-duplication (SPEC §6): phones to E.164 (+86 by default), lowercased
emails and WeChat ids, company names without legal suffixes, full-width folded, punctuation removed.

Emails and company names use intake's keys (``crm.intake.normalize``), so an edited customer is keyed as a
new lead would be. Phones keep a digits fallback here (a search by the stored number finds it), but a
number with letters gets no key: letters are never read as keypad digits."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from crm.intake import normalize

DEFAULT_REGION = "CN"


def phone_key(text: str | None) -> str | None:
    """``138 1234 5678`` / ``+86 138-1234-5678`` / ``0086…`` → ``+8613812345678``; None when not a number.

    Numbers that ``phonenumbers`` cannot validate still get a key from their digits, so a search by the
    stored number finds it.
    """
    if not text:
        return None
    raw = unicodedata.normalize("NFKC", str(text)).strip()
    if normalize.has_letters(raw):
        return None
    digits = re.sub(r"\D", "", raw)
    if len(digits) < 5:
        return None
    try:
        number = phonenumbers.parse(raw, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return "+" + digits if raw.startswith("+") else "+86" + digits
    if phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[:20]
    return ("+" + digits)[:20] if raw.startswith("+") else ("+86" + digits)[:20]


def looks_like_phone(text: str) -> bool:
    """A search query that is a phone number: at least 7 digits and nothing but separators around them."""
    cleaned = unicodedata.normalize("NFKC", text).strip()
    return bool(re.fullmatch(r"\+?[\d\s\-()]{7,}", cleaned)) and sum(c.isdigit() for c in cleaned) >= 7


def email_key(text: str | None) -> str | None:
    return normalize.email_key(text)


def wechat_key(text: str | None) -> str | None:
    text = unicodedata.normalize("NFKC", text or "").strip().lower()
    return text or None


def company_key(name: str | None) -> str:
    """``上海星河科技有限公司`` → ``星河科技`` (intake's ``name_key``); ``ACME Co., Ltd.`` → ``acme``."""
    return normalize.name_key(name)
