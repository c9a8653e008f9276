"""Raw corpus labels -> the SpeechLLM schema's labels, for evaluation manifests that keep their sources' spellings.

`map_label(field, raw)` first tries `metadata.normalize_label` (case and spacing variants of the schema's own
labels: "female" -> "Female", "true" -> True), then the table below. A raw value in neither has no counterpart
and is left out of scoring (the evaluation report counts such values per field).

The table holds the raw values of ../shared/realspeech-dev (`grep -o '"accent": "[^"]*"' manifest.jsonl | sort -u`)
and the common spellings of the corpora SpeechLLM was trained on (CommonVoice accents, RAVDESS/CREMA-D emotions):

- Accent: US, Canadian and "North American" English -> America; England / British / generic "English" and other
  European-accented English -> Europe; Scottish, Irish, Welsh -> Celtic; Indian, Pakistani, Sri Lankan,
  Bangladeshi, Nepali -> South-Asia; Australian, New Zealand -> Oceania; African varieties -> Africa; Filipino,
  Singaporean, Malaysian, Hong Kong -> South-East-Asia.
- Emotion (RAVDESS has 8 classes, the schema 5): angry -> Anger, happy -> Happy, sad -> Sad, neutral and calm ->
  Neutral. fearful, disgust and surprised have no counterpart and are left out.
- Age: CommonVoice decades: teens, twenties -> Young; thirties..fifties -> Middle-Age; sixties and older -> Senior.
  Ranges that straddle two groups (realspeech-dev's "50-70") are left out rather than guessed.
"""

from __future__ import annotations

from speechllm.metadata import SPEECHLLM_SCHEMA, MetadataSchema, normalize_label

_AMERICA = ["american english", "american english (native u.s.)", "north american english (neutral)",
            "north american english", "us english", "united states english", "us", "canadian english", "canada"]
_EUROPE = ["british english", "english", "england english", "england", "southern british english",
           "received pronunciation", "european english", "german english", "french english", "spanish english"]
_CELTIC = ["scottish english", "scottish", "scotland", "irish english", "irish", "ireland", "welsh english",
           "welsh", "wales"]
_SOUTH_ASIA = ["indian english", "india and south asia (india, pakistan, sri lanka)", "indian", "pakistani english",
               "sri lankan english", "bangladeshi english", "nepali english"]
_OCEANIA = ["australian english", "australia english", "australian", "new zealand english", "new zealand"]
_AFRICA = ["african english", "nigerian english", "south african english", "kenyan english", "ghanaian english",
           "southern african (south africa, zimbabwe, namibia)", "west african", "east african"]
_SOUTH_EAST_ASIA = ["filipino english", "philippines", "singaporean english", "singapore english",
                    "malaysian english", "malaysia", "hong kong english", "hongkong"]

RAW_LABELS: dict[str, dict[str, str]] = {
    "Accent": {
        **dict.fromkeys(_AMERICA, "America"), **dict.fromkeys(_EUROPE, "Europe"),
        **dict.fromkeys(_CELTIC, "Celtic"), **dict.fromkeys(_SOUTH_ASIA, "South-Asia"),
        **dict.fromkeys(_OCEANIA, "Oceania"), **dict.fromkeys(_AFRICA, "Africa"),
        **dict.fromkeys(_SOUTH_EAST_ASIA, "South-East-Asia"),
    },
    "Emotion": {"angry": "Anger", "anger": "Anger", "happy": "Happy", "happiness": "Happy", "sad": "Sad",
                "sadness": "Sad", "neutral": "Neutral", "calm": "Neutral", "frustrated": "Frustrated",
                "frustration": "Frustrated"},
    "Age": {"teens": "Young", "twenties": "Young", "thirties": "Middle-Age", "fourties": "Middle-Age",
            "forties": "Middle-Age", "fifties": "Middle-Age", "sixties": "Senior", "seventies": "Senior",
            "eighties": "Senior", "nineties": "Senior"},
}


def map_label(field: str, raw, schema: MetadataSchema = SPEECHLLM_SCHEMA):
    """The schema's value of `field` for a raw corpus label, or None when it has no counterpart.

    A mapped value is kept only when `schema` has it (a custom schema may lack a label of the table)."""
    value = normalize_label(field, raw, schema)
    if value is not None or not isinstance(raw, str):
        return value
    mapped = RAW_LABELS.get(field, {}).get(" ".join(raw.split()).casefold())
    return mapped if mapped in schema.field(field).labels else None
