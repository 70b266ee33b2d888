"""A message's country for /v1/stats: the ISO 3166 region of its `to`, by the phonenumbers library.

Numbers come as E.164 (`+14155550100`), as E.164 without the plus (Vonage: `447700900000`), or
with a channel prefix (Twilio: `whatsapp:+15551119999`). A number the library finds valid gets
its exact region (+1 604 … is CA, not US); one it does not (test and drama ranges such as
+44 7700 900…) gets its country code's main region. Anything else, such as an alphanumeric
sender id or a +800 number of no country, is `unknown`.
"""

from __future__ import annotations

import functools

import phonenumbers

UNKNOWN = "unknown"


@functools.lru_cache(maxsize=1 << 16)  # a message's events share their `to`; parsing costs ~35 us
def country_of(to: str | None) -> str:
    if not to:
        return UNKNOWN
    number = to.rpartition(":")[2].strip()  # whatsapp:+1…, sms:+1…
    if number.isdigit() and 8 <= len(number) <= 15:
        number = "+" + number
    if not number.startswith("+"):
        return UNKNOWN
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return UNKNOWN
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code or 0)
    if not region or region in (phonenumbers.UNKNOWN_REGION, phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY):
        return UNKNOWN  # also +800 and the like: numbers of no country
    return region
