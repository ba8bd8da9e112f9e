"""Built-in probe texts for the merge audit: what must tokenise as before, and what must round-trip.

These are short, hand-written strings covering the cases that break merged tokenizers: English prose, code, numbers,
other scripts, emoji with joiners, Korean with Hanja, jamo and mixed text. Users add their own held-out text on top.
"""

NON_TARGET = [
    "The quick brown fox jumps over the lazy dog.",
    "Continual pretraining adapts a language model to a new language without forgetting the old one.",
    "def bits_per_byte(nll: float, n_bytes: int) -> float:\n    return nll / math.log(2) / n_bytes\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "3.14159 2,718 1e-9 0x1F 12345678901234567890 -42 +7% $19.99",
    "  leading and trailing spaces   ",
    "Tabs\tand\nnew\n\nlines\r\n",
    "naïve café résumé coöperate Zürich façade",
    "Привет, мир! Как дела?",
    "这是一个中文句子。日本語の文も含まれています。",
    "مرحبا بالعالم",
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇰🇷 ❤️",
    "<|im_start|>user\nHello!<|im_end|>",
    "https://example.com/path?query=1&other=two#frag",
]

ROUND_TRIP = [
    "대한민국은 민주공화국이다.",
    "한국어와 English가 섞인 문장입니다: GPT-4, 3.14, 2024년.",
    "ㅋㅋㅋㅋ ㅠㅠ ㄱㄴㄷㄹ ㅏㅑㅓㅕ",
    "옛한글 자모: ᄀᆞᄅᆞᆷ ᄒᆞᆫ",
    "大韓民國 憲法 第1條 ① 大韓民國은 民主共和國이다.",
    "이모지도 있어요 😀🎉👨‍👩‍👧 그리고 한글",
    "똠방각하 뷁 햏 쀍 — 드문 음절",
    "  띄어쓰기   여러 칸  \n줄바꿈\t탭",
    "The quick brown fox. 빠른 갈색 여우.",
    "",
]
