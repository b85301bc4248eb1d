"""Normalisation into de-duplication keys: tricky real-world phone numbers, company names, emails, WeChat."""

from __future__ import annotations

import pytest

from crm.intake import normalize

MOBILE = "+8613800138000"
SHANGHAI = "+862162888888"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("138 0013 8000", MOBILE),
        ("+86-138-0013-8000", MOBILE),
        ("8613800138000", MOBILE),
        ("008613800138000", MOBILE),
        ("0086 138 0013 8000", MOBILE),
        ("+86 (0) 138 0013 8000", MOBILE),
        ("１３８ ００１３ ８０００", MOBILE),  # full-width digits
        ("138.0013.8000", MOBILE),
        ("tel:+86-138-0013-8000", MOBILE),
        ("手机:13800138000", MOBILE),
        ("13800138000 微信同号", MOBILE),
        ("13800138000/13900139000", MOBILE),  # two numbers: the first
        ("138-0013-8000 ext. 12", MOBILE),
        ("(021) 6288-8888", SHANGHAI),
        ("021-62888888", SHANGHAI),
        ("（０２１）６２８８８８８８", SHANGHAI),  # full-width brackets and digits
        ("+86 21 6288 8888", SHANGHAI),
        ("86-21-62888888", SHANGHAI),
        ("021-62888888转801", SHANGHAI),  # extension dropped: the switchboard is the company
        ("电话:021-62888888 转 801", SHANGHAI),
        ("021-6288 8888-801", SHANGHAI),
        ("0755-83765566", "+8675583765566"),
        ("010 8888 8888", "+861088888888"),
        ("(0571)88888888", "+8657188888888"),
        ("+1 415 555 2671", "+14155552671"),
        ("+852 2123 4567", "+85221234567"),
    ],
)
def test_phone_forms_become_one_e164_key(raw, key):
    assert normalize.phone_key(raw) == key


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("62888888", "座机号码请带区号"),  # landline without its area code
        ("12345", "不是有效的电话号码"),
        ("95588", "不是有效的电话号码"),  # a service short code
        ("abc", "不是有效的电话号码"),
        ("138-0013-800", "不是有效的电话号码"),  # a digit short
        ("1380013800O", "不是有效的电话号码"),  # a letter O typed for zero
        ("1.38001E+10", "不是有效的电话号码"),  # Excel's scientific notation lost the digits
    ],
)
def test_what_is_not_a_phone_gets_no_key_and_a_reason(raw, reason):
    assert normalize.phone_key(raw) is None
    assert reason in normalize.phone_error(raw)


def test_empty_phone_has_no_key():
    assert normalize.phone_key("") is None
    assert normalize.phone_key(None) is None
    assert normalize.phone_key("   ") is None


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("上海星河科技有限公司", "上海星河科技"),
        ("上海星河科技(集团)股份有限公司", "上海星河科技"),
        ("上海星河科技有限责任公司", "上海星河科技"),
        ("星河科技（上海）有限公司", "星河科技"),  # bracketed place name, full-width brackets
        ("星河科技【上海】有限公司", "星河科技"),
        ("星河 科技·有限责任公司", "星河科技"),  # spaces and punctuation
        ("小米科技有限责任公司", "小米科技"),
        ("阿里巴巴集团控股有限公司", "阿里巴巴控股"),
        ("西门子（中国）有限公司", "西门子"),
        ("深圳市腾讯计算机系统有限公司", "深圳腾讯计算机系统"),  # 市 after a leading city
        ("广东省深圳市星河科技有限公司", "广东深圳星河科技"),
        ("上海星河科技有限公司北京分公司", "上海星河科技北京"),
        ("星河科技公司", "星河科技"),
        ("星河科技股份公司", "星河科技"),
        ("ＡＢＣ Technology Co., Ltd.", "abctechnology"),  # full-width letters, English legal form
        ("Huawei Technologies Co.,Ltd", "huaweitechnologies"),
        ("Apple Inc.", "apple"),
        ("IBM Corporation", "ibm"),
        ("Acme Holdings Limited", "acme"),
        ("星河科技 LLC", "星河科技"),
        ("有限公司", "有限公司"),  # nothing but a legal form: kept comparable, not empty
        ("", ""),
    ],
)
def test_company_names_fold_to_comparable_keys(raw, key):
    assert normalize.name_key(raw) == key


def test_the_same_company_written_differently_gets_the_same_key():
    forms = [
        "上海星河科技有限公司",
        "上海星河科技股份有限公司",
        "上海 星河科技 (集团)",
        "上海星河科技有限责任公司",
    ]
    assert len({normalize.name_key(f) for f in forms}) == 1


@pytest.mark.parametrize(
    ("raw", "key", "valid"),
    [
        ("  Li.Lei@Example.COM ", "li.lei@example.com", True),
        ("ｌｉｌｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ", "lilei@example.com", True),
        ("lilei@", "lilei@", False),
        ("not an email", "not an email", False),
    ],
)
def test_emails_are_trimmed_and_lowercased(raw, key, valid):
    assert normalize.email_key(raw) == key
    assert normalize.email_valid(raw) is valid


@pytest.mark.parametrize(
    ("raw", "key", "valid"),
    [
        ("wxid_ABC123", "wxid_abc123", True),
        ("微信:Zhang_San88", "zhang_san88", True),
        ("WeChat: Abc-123", "abc-123", True),
        (" 13800138000 ", MOBILE, True),  # 微信同号: keyed as the phone
        ("微信号: 138 0013 8000", MOBILE, True),
        ("张三", "张三", False),
    ],
)
def test_wechat_ids_are_case_folded_and_phone_ids_key_as_phones(raw, key, valid):
    assert normalize.wechat_key(raw) == key
    assert normalize.wechat_valid(raw) is valid


def test_name_grams_are_the_distinct_bigrams():
    assert normalize.name_grams("星河科技") == ["星河", "河科", "科技"]
    assert normalize.name_grams("哈哈哈哈") == ["哈哈"]
    assert normalize.name_grams("米家") == ["米家"]
    assert normalize.name_grams("") == []


@pytest.mark.parametrize(
    ("raw", "size"),
    [("120", 120), (120, 120), (120.0, 120), ("100-499人", 100), ("500人以上", 500), ("1,200", 1200), ("1万人", 10000),
     ("", None), ("很多", None), (None, None)],
)  # fmt: skip
def test_company_size_takes_the_first_number(raw, size):
    assert normalize.company_size(raw) == size


def test_the_mobile_fast_path_agrees_with_phonenumbers():
    """phone_key skips parsing for plain Chinese mobiles; it must give exactly what libphonenumber gives."""
    import random

    import phonenumbers

    rng = random.Random(11)
    for _ in range(3000):
        digits = "1" + "".join(rng.choice("0123456789") for _ in range(10))
        form = rng.choice(["{d}", "+86{d}", "86 {d}", "0086-{d}", "{a} {b} {c}", "{a}-{b}-{c}"])
        raw = form.format(d=digits, a=digits[:3], b=digits[3:7], c=digits[7:])
        try:
            number = phonenumbers.parse(raw, "CN")
            expected = (
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                if phonenumbers.is_valid_number(number)
                else None
            )
        except phonenumbers.NumberParseException:
            expected = None
        assert normalize.phone_key(raw) == expected, raw
