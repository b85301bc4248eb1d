"""Normalisation of lead data into de-duplication keys (one module, table-tested in tests/test_normalize.py).

- ``phone_key``: E.164 with +86 as the default region (``phonenumbers``): 138 0013 8000, +86-138-0013-8000,
  8613800138000, 008613800138000 and full-width digits are one number; landlines need their area code
  ((021) 6288-8888 and 021-62888888 are one number); extensions (转 801, ext. 801, -801) are dropped, so a
  switchboard number matches the company.
- ``phone_key`` refuses letters: a number typed with a letter (O for 0, a vanity number) is invalid, never
  turned into keypad digits — only a leading label (``tel:``, 电话:) and an extension marker (ext., x, 转) may
  carry letters.
- ``email_clean`` / ``email_key``: what is stored and what is compared. A ``mailto:`` prefix (and its
  ``?subject=`` tail), invisible characters (zero-width spaces, BOM, NBSP), a display name
  (``张三 <zhangsan@example.com>``) and full-width ＠ 。 are cleaned away; the key is the clean address
  lowercased.
- ``wechat_key``: trimmed, lowercased, a "微信:" / "wx:" label removed; a WeChat id that is a phone number
  (微信同号) becomes that phone's E.164 so both spellings match.
- ``name_key``: the company name folded (NFKC: full-width → half-width), case folded, bracketed place
  names (上海) / (中国) and legal forms (有限公司, 有限责任公司, 股份有限公司, 集团, 分公司, Co., Ltd., Inc. …)
  removed, a leading province/city's 省/市 dropped, punctuation and spaces removed, Traditional characters
  folded to Simplified (OpenCC ``t2s``: 騰訊 = 腾讯). Changing this key changes stored keys:
  ``crm.intake.grams.recompute_name_keys`` rewrites them (the migration that brought OpenCC runs it).
- ``name_grams``: the blocking keys of a name key (its character bigrams) for fuzzy matching.
"""

from __future__ import annotations

import re
import unicodedata
from email.utils import parseaddr
from functools import lru_cache

import opencc
import phonenumbers
from flask_babel import gettext as _

DEFAULT_REGION = "CN"

# Places that appear in brackets or as a prefix of Chinese company names: provinces, big cities, 中国.
_PLACE_WORDS = (
    "中国 北京 天津 上海 重庆 河北 山西 辽宁 吉林 黑龙江 江苏 浙江 安徽 福建 江西 山东 河南 湖北 湖南 广东 海南 四川 "
    "贵州 云南 陕西 甘肃 青海 台湾 内蒙古 广西 西藏 宁夏 新疆 香港 澳门 深圳 广州 杭州 南京 苏州 宁波 无锡 厦门 福州 "
    "武汉 长沙 成都 西安 郑州 济南 青岛 大连 沈阳 长春 哈尔滨 合肥 南昌 昆明 贵阳 南宁 海口 石家庄 太原 兰州 "
    "乌鲁木齐 东莞 佛山 珠海 中山 惠州 温州 嘉兴 绍兴 金华 台州 常州 南通 徐州 扬州 烟台 潍坊 泉州 漳州"
)
PLACES = tuple(_PLACE_WORDS.split(" "))
_PLACE_SET = set(PLACES)
# Longest first so 黑龙江 wins over a shorter overlap.
_PLACE_LENGTHS = sorted({len(p) for p in PLACES}, reverse=True)

# Chinese legal forms, longest first; removed wherever they occur.
CN_LEGAL_FORMS = (
    "股份有限公司",
    "有限责任公司",
    "集团有限公司",
    "集团股份公司",
    "股份公司",
    "有限合伙企业",
    "有限公司",
    "集团公司",
    "有限合伙",
    "责任公司",
    "分公司",
    "总公司",
    "集团",
)
# Removed only at the end of the name (a 公司 in the middle may be part of the trade name).
CN_TRAILING = ("公司", "分店", "分部", "办事处")
# English legal forms as whole words (after case folding).
EN_LEGAL_FORMS = re.compile(
    r"\b(?:co\s*[.,]?\s*,?\s*ltd|company\s+limited|co\s*[.,]?\s*limited|limited|ltd|incorporated|inc|"
    r"corporation|corp|l\.?l\.?c|gmbh|plc|pte|pty|holdings?|group|company|co)\b\.?"
)
_BRACKETS = re.compile(r"[(\[{【〔]([^)\]}】〕]*)[)\]}】〕]")
_EXTENSION = re.compile(r"(?:转|分机|ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)
_TRAILING_GROUP = re.compile(r"\s*-\s*\d{1,5}$")
_WECHAT_LABEL = re.compile(
    r"^(?:(?:微信号?|wechat(?:\s*id)?|weixin|wx|vx)\s*[::]|微信号?\s)\s*", re.IGNORECASE
)
_WECHAT_ID = re.compile(r"^[a-z0-9_\-.]{3,40}$")
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s.<>()\[\],;:\"]+$")
# Invisible characters pasted along with addresses: zero-width space/joiners, word joiner, BOM, soft hyphen.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_MAILTO = re.compile(r"^mailto:", re.IGNORECASE)
_PHONE_LABEL = re.compile(r"^(?:tel|电话|手机|座机|phone|mobile)\s*[::]?\s*", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]", re.ASCII)  # an ASCII letter: phonenumbers would read it as a keypad digit


def fold(text: str | None) -> str:
    """Full-width → half-width (NFKC), trimmed; None → ""."""
    return unicodedata.normalize("NFKC", text or "").strip()


# ---------------------------------------------------------------- phones


def _valid_e164(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Fast path for the most common input, a Chinese mobile number: libphonenumber's own mobile pattern for CN,
# applied without parsing (parse() costs ~0.1 ms; a 10,000-row import normalises every row).
_CN_MOBILE = re.compile(
    "(?:" + phonenumbers.PhoneMetadata.metadata_for_region("CN").mobile.national_number_pattern + ")"
)
_MOBILE_FORM = re.compile(r"(?:\+?86|0086)?(1\d{10})")
_SEPARATORS = str.maketrans("", "", " -.()")


def phone_key(raw: str | None) -> str | None:
    """The E.164 form of the first valid phone number in ``raw`` (+86 default), or None."""
    text = fold(raw)
    if not text:
        return None
    simple = _MOBILE_FORM.fullmatch(text.translate(_SEPARATORS))
    if simple and _CN_MOBILE.fullmatch(simple.group(1)):
        return "+86" + simple.group(1)
    text = _PHONE_LABEL.sub("", text)
    text = _EXTENSION.sub("", text).strip()
    if _LETTER.search(text):
        return None  # never keypad digits
    key = _valid_e164(text)
    if key:
        return key
    # 021-6288 8888-801: a trailing extension group without a marker.
    stripped = _TRAILING_GROUP.sub("", text)
    if stripped != text and sum(ch.isdigit() for ch in stripped) >= 10:  # a landline with its area code
        key = _valid_e164(stripped)
        if key:
            return key
    # Noise around the number ("13800138000 微信同号", two numbers separated by "/"): the first valid one.
    for match in phonenumbers.PhoneNumberMatcher(text, DEFAULT_REGION, leniency=phonenumbers.Leniency.VALID):
        return phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
    return None


def has_letters(raw: str | None) -> bool:
    """Letters in a phone number besides a leading label (tel:) and an extension marker (ext. 12)."""
    text = _EXTENSION.sub("", _PHONE_LABEL.sub("", fold(raw))).strip()
    return bool(_LETTER.search(text))


def phone_error(raw: str | None) -> str | None:
    """A reason why ``raw`` is not a phone number, or None when it is."""
    if phone_key(raw):
        return None
    text = fold(raw)
    digits = "".join(ch for ch in text if ch.isdigit())
    if re.fullmatch(r"\d(\.\d+)?[eE]\+?\d+", text):
        return _("不是有效的电话号码 (被转成了科学计数法,请把该列设为文本)。")
    if has_letters(text):
        return _("不是有效的电话号码: 号码中不能有字母 (请核对是否把 0 写成了 O)。")
    if re.fullmatch(r"[\d\s\-()]+", text) and 7 <= len(digits) <= 8:
        return _("座机号码请带区号,例如 021-62888888。")
    return _("不是有效的电话号码。")


# ---------------------------------------------------------------- email, WeChat


def email_clean(raw: str | None) -> str:
    """The address in ``raw`` as it should be stored (case kept), "" for none; see the module docstring."""
    text = (raw or "").translate(_INVISIBLE)
    text = fold(text).replace("。", ".").replace("｡", ".")  # NFKC already made ＠ → @ and ． → .
    if "<" in text and ">" in text:
        _display, address = parseaddr(text)
        text = address or text
    return _MAILTO.sub("", text.strip()).split("?", 1)[0].strip()


def email_key(raw: str | None) -> str | None:
    text = email_clean(raw).lower()
    return text or None


def email_valid(raw: str | None) -> bool:
    key = email_key(raw)
    return bool(key and len(key) <= 254 and _EMAIL.match(key))


def wechat_key(raw: str | None) -> str | None:
    """WeChat ids are case-insensitive; one that is a phone number (微信同号) keys as the phone."""
    text = _WECHAT_LABEL.sub("", fold(raw)).strip()
    if not text:
        return None
    compact = re.sub(r"[\s\-]", "", text)
    if compact.lstrip("+").isdigit() and len(compact) >= 7:
        phone = phone_key(text)
        if phone:
            return phone
    return re.sub(r"\s+", "", text).lower()


def wechat_valid(raw: str | None) -> bool:
    key = wechat_key(raw)
    return bool(key and (key.startswith("+") or _WECHAT_ID.match(key)))


# ---------------------------------------------------------------- company names


def _drop_place_brackets(text: str) -> str:
    def repl(match: re.Match) -> str:
        inner = match.group(1).strip()
        inner_core = re.sub(r"[省市]$", "", inner)
        return "" if inner_core in _PLACE_SET or not inner else match.group(0)

    return _BRACKETS.sub(repl, text)


def _drop_place_suffix_chars(text: str) -> str:
    """广东省深圳市星河 → 广东深圳星河: the 省/市 after leading place names (longest place first)."""
    out = text
    pos = 0
    for _round in range(3):
        for n in _PLACE_LENGTHS:
            if out[pos : pos + n] in _PLACE_SET:
                end = pos + n
                if end < len(out) and out[end] in "省市":
                    out = out[:end] + out[end + 1 :]
                pos = end
                break
        else:
            break
    return out


_T2S: opencc.OpenCC | None = None


def simplified(text: str) -> str:
    """Traditional → Simplified characters (OpenCC ``t2s``, one converter per process); ASCII untouched."""
    global _T2S
    if text.isascii():
        return text
    if _T2S is None:
        _T2S = opencc.OpenCC("t2s")
    return _T2S.convert(text)


@lru_cache(maxsize=4096)
def name_key(raw: str | None) -> str:
    """The comparable form of a company (or person) name; "" for an empty name."""
    text = simplified(fold(raw)).casefold()
    if not text:
        return ""
    text = _drop_place_brackets(text)
    text = EN_LEGAL_FORMS.sub(" ", text)
    for form in CN_LEGAL_FORMS:
        text = text.replace(form, "")
    compact = "".join(ch for ch in text if ch.isalnum())
    for tail in CN_TRAILING:
        if compact.endswith(tail) and len(compact) > len(tail):
            compact = compact[: -len(tail)]
            break
    compact = _drop_place_suffix_chars(compact)
    if not compact:
        # The name was only a legal form ("有限公司"): keep something comparable.
        compact = "".join(ch for ch in fold(raw).casefold() if ch.isalnum())
    return compact[:120]


def name_grams(key: str) -> list[str]:
    """Blocking keys of a name key: its distinct character bigrams (the key itself when shorter)."""
    if not key:
        return []
    if len(key) < 3:
        return [key]
    seen: dict[str, None] = {}
    for i in range(len(key) - 1):
        seen.setdefault(key[i : i + 2], None)
    return list(seen)


def company_size(raw: object) -> int | None:
    """Employees from "120", "100-499人", "500人以上", 1,200 → the first number; None when absent."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return int(raw) if raw >= 0 else None
    text = fold(str(raw)).replace(",", "")
    match = re.search(r"\d+", text)
    if not match:
        return None
    value = int(match.group(0))
    if re.search(r"\d+\s*万", text):
        value *= 10000
    return value
