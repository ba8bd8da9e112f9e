"""The tokenizer inside a GGUF file: token list and types, merges, special ids and flags, the chat template, and the
llama.cpp pre-tokenizer type, named from the BASE model (see :mod:`redwhale.export.gguf` for why).

Written by hand, as llama.cpp's ``convert_hf_to_gguf.py`` does it (it is a script, not a package): the token types,
llama.cpp's table of pre-tokenizer hashes (``chkhsh``) and its check text, copied byte for byte.
"""

from __future__ import annotations

import json
import logging
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

from redwhale.core.errors import ModelSourceError, RedwhaleError
from redwhale.core.source import LoadOptions, load_tokenizer, resolve

log = logging.getLogger(__name__)

# llama.cpp's check text, copied byte for byte from conversion/base.py (get_vocab_base_pre).
CHKTXT = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"  # noqa: E501
#: chkhsh -> tokenizer.ggml.pre, from llama.cpp's table (conversion/base.py): the decoder families one adapts.
KNOWN_PRE = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    # Korean-first bases
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb": "exaone4",
    "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15": "trillion",
    "b0a6b1c0bd5998ebd9df08611efde34a4ff03faed45ae09c43e6b31ebd4b94cf": "a.x-4.0",
    "f6791d196f87ce6b56a7d234be618e0d58f8cda3549416635b2bebcd22cd95c4": "midm-2.0",
    "4a2e2abae11ca2b86d570fc5b44be4d5eb5e72cc8f22dd136a94b37da83ab665": "kormo",
    "e4d54df1ebc1f2b91acd986c5b51aa50837d5faf7c7398e73c1f9e9ee5d19869": "kanana2",
}
#: A plain GPT-2 byte-level pre-tokenizer (what ``tokenizers`` trains by default) splits like llama.cpp's ``gpt-2``
#: regex (trim_offsets only changes offsets, not the split, so it is not compared).
GPT2_BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


def _tokenizer_json(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise RedwhaleError(f"{folder} has no tokenizer.json: only fast (tokenizers) tokenizers are exported")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["model"].get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise RedwhaleError(
            f"{folder}: the GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen); "
            "SentencePiece tokenizers are not supported yet"
        )
    return data


def looks_special(token: str) -> bool:
    """llama.cpp converter's ``does_token_look_special``."""
    seps = token.startswith("<|") and token.endswith("|>") or token.startswith("<｜") and token.endswith("｜>")
    return seps or token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or token.startswith("<unused")


def token_list(folder: Path, rows: int) -> tuple[list[str], list[int]]:
    """Tokens and llama.cpp token types for ids 0..rows-1: vocab entries NORMAL (byte-level spelling), special added
    tokens CONTROL, other added tokens USER_DEFINED (raw text), ids without a token ``[PAD{i}]`` UNUSED."""
    data = _tokenizer_json(folder)
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in data["model"]["vocab"].items()}
    for added in data.get("added_tokens", []):
        special = added.get("special") or looks_special(added["content"])
        by_id[added["id"]] = (added["content"], gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    if by_id and max(by_id) >= rows:
        raise RedwhaleError(f"the tokenizer has ids up to {max(by_id)} but the embedding only {rows} rows")
    tokens, types = [], []
    for i in range(rows):
        token, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
    if len(set(tokens)) != len(tokens):  # llama.cpp asserts id_to_token.size() == token_to_id.size() on load
        seen: set[str] = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))
        raise RedwhaleError(f"the token {dup!r} appears twice in the vocabulary; llama.cpp would refuse the file")
    return tokens, types


def _adds_special(tokenizer) -> tuple[bool, bool]:
    """Whether the HF tokenizer puts BOS in front / EOS at the end of a plain encode, so llama.cpp does the same."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path, tokenizer, tokens: list[str], types: list[int], pre: str):
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise RedwhaleError(f"{folder}/tokenizer.json has no merges; llama.cpp cannot load a BPE vocabulary without")
    # Written explicitly from what the HF tokenizer does: when the key is missing Ollama adds a BOS (its default is
    # true) and the SmolLM special case of llama.cpp's converter keys on a vocabulary of exactly 49152.
    add_bos, add_eos = _adds_special(tokenizer)
    special.add_special_token.update(bos=add_bos, eos=add_eos)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template  # older gguf-py does not read chat_template.jinja
    config = (
        json.loads((folder / "tokenizer_config.json").read_text())
        if (folder / "tokenizer_config.json").is_file()
        else {}
    )
    if isinstance(config.get("add_prefix_space"), bool):
        writer.add_add_space_prefix(config["add_prefix_space"])
    special.add_to_gguf(writer, quiet=True)


def chkhsh(tokenizer) -> str:
    """llama.cpp's pre-tokenizer fingerprint: SHA-256 of the ids of CHKTXT (``encode`` with its default specials)."""
    return sha256(str(tokenizer.encode(CHKTXT)).encode()).hexdigest()


def _backend_json(tokenizer) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def pre_tokenizer_type(folder: Path, tokenizer, base_spec: str | None, load: LoadOptions) -> tuple[str, str]:
    """(tokenizer.ggml.pre, how it was found) for the model in ``folder``, taken from the base (see module doc)."""
    _tokenizer_json(folder)  # refuse other kinds of tokenizer before anything is hashed
    base = tokenizer if base_spec is None else load_tokenizer(base_spec, **load.tokenizer_kwargs())
    mine, theirs = _backend_json(tokenizer), _backend_json(base)
    for part in ("pre_tokenizer", "normalizer"):
        if mine.get(part) != theirs.get(part):
            raise RedwhaleError(
                f"the model's tokenizer {part} differs from the base's ({base_spec}): its pre-tokenizer type cannot "
                "be taken from the base"
            )
    digest = chkhsh(base)
    if digest in KNOWN_PRE:
        return KNOWN_PRE[digest], f"chkhsh of the base tokenizer ({digest[:12]})"
    from_file = _pre_from_gguf_source(base_spec or str(folder))
    if from_file:
        return from_file, "tokenizer.ggml.pre of the base's GGUF file"
    plain = {k: v for k, v in (theirs.get("pre_tokenizer") or {}).items() if k != "trim_offsets"}
    if plain == GPT2_BYTELEVEL and theirs.get("normalizer") is None:
        log.warning("unknown BPE pre-tokenizer (chkhsh %s); it is plain GPT-2 byte-level, so writing 'gpt-2'", digest)
        return "gpt-2", "plain GPT-2 byte-level pre-tokenizer (chkhsh unknown to llama.cpp)"
    raise RedwhaleError(
        f"the base tokenizer's pre-tokenizer is unknown to llama.cpp (chkhsh {digest}); add it to KNOWN_PRE in "
        "redwhale/export/gguf.py with the name llama.cpp's convert_hf_to_gguf_update.py gives it"
    )


def _pre_from_gguf_source(spec: str) -> str | None:
    """``tokenizer.ggml.pre`` of the GGUF file a spec is (alias, .gguf) or was converted from (redwhale_source.json)."""
    try:
        source = resolve(spec)
    except ModelSourceError:
        return None
    path = source.path if source.kind in ("alias", "gguf") else None
    record = source.path / "redwhale_source.json" if source.kind == "local" and source.path else None
    if record is not None and record.is_file():
        path = Path(json.loads(record.read_text()).get("gguf_file", ""))
    if path is None or not path.is_file():
        return None
    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else None
