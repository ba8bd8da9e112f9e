"""Builders for the hermetic test fixtures: tiny tokenizers trained in-process and random 2-layer Llama models.

Nothing here touches the network or ``../shared``.
"""

from __future__ import annotations

from pathlib import Path

KOREAN_LINES = [
    "대한민국은 민주공화국이다.",
    "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.",
    "오늘은 날씨가 맑아서 공원에 산책하러 갔습니다.",
    "한국어 토크나이저를 학습하고 기존 토크나이저에 병합합니다.",
    "이 영화는 정말 재미있었어요 ㅋㅋㅋ 배우들의 연기가 최고였다.",
    "서울에서 부산까지 기차로 세 시간 정도 걸립니다.",
    "우리는 매일 아침 일곱 시에 일어나서 운동을 한다.",
    "도서관에서 책을 빌려 읽는 것을 좋아합니다.",
    "회의는 다음 주 화요일 오후 두 시에 열릴 예정입니다.",
    "학생들은 시험 준비로 바쁜 시간을 보내고 있다.",
    "김치찌개와 된장찌개 중에서 무엇을 먹을까요?",
    "정부는 새로운 교육 정책을 발표했다.",
    "인공지능 언어 모델은 많은 데이터를 필요로 한다.",
    "한글은 세종대왕이 창제한 우리 고유의 문자이다.",
    "그 가게는 주말에도 문을 엽니다.",
    "비가 오면 우산을 챙기세요.",
    "국민의 권리와 의무는 법률로 정한다.",
    "모든 국민은 인간으로서의 존엄과 가치를 가진다.",
    "이 법은 공포한 날부터 시행한다.",
    "친구와 함께 카페에서 커피를 마셨다.",
    "한국어는 교착어라서 조사가 단어 뒤에 붙는다.",
    "새로운 단어를 배우는 것은 언제나 즐겁다.",
    "내일은 눈이 올 것이라고 일기예보에서 말했다.",
    "국회는 법률안을 심의하고 의결한다.",
]

ENGLISH_LINES = [
    "The capital of France is Paris.",
    "A tokenizer splits text into pieces that a model can read.",
    "def add(a, b):\n    return a + b\n",
    "Numbers like 3.14159 and 2024 should tokenize the same way.",
    "The quick brown fox jumps over the lazy dog.",
    "Continual pretraining adapts a model to a new language.",
    "Embeddings for new tokens are initialised from their pieces.",
    "for i in range(10): print(i * i)",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_lines() -> list[str]:
    return KOREAN_LINES + ENGLISH_LINES


def train_tiny_bpe(out: Path, vocab_size: int = 700, lines: list[str] | None = None) -> Path:
    """A byte-level BPE tokenizer (GPT-2 style pre-tokenizer) saved as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # English-heavy on purpose: the tiny base should split Korean into bytes, like a real English-centric base.
    tokenizer.train_from_iterator((lines or ENGLISH_LINES * 20 + KOREAN_LINES[:3]), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return out


def train_tiny_sentencepiece(out: Path, vocab_size: int = 450) -> Path:
    """A SentencePiece BPE model with byte fallback (Llama-2 style), saved with a matching fast tokenizer."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    text = out / "train.txt"
    text.write_text("\n".join(ENGLISH_LINES * 10 + KOREAN_LINES[:3]), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(out / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.98,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        minloglevel=2,
    )
    text.unlink()
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    tokenizer = LlamaTokenizer.from_pretrained(str(out))
    tokenizer.save_pretrained(out)
    return out


def make_tiny_llama(out: Path, tokenizer_dir: Path, tied: bool, seed: int = 0, layers: int = 2) -> Path:
    """A random Llama with ``layers`` layers whose vocabulary matches the tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig.from_model_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_tiny_gguf(model_dir: Path, out: Path, quantize: bool = True) -> Path:
    """Write a llama.cpp-style GGUF file of a tiny Llama folder (2-D weights as Q8_0 when ``quantize``), so that the
    GGUF path of the loader is tested without the 98 MB embedded model."""
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]

    def permute(w: np.ndarray, heads: int) -> np.ndarray:  # llama.cpp's rotary layout for q/k
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config["hidden_size"] // n_head)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    vocab = tok["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    specials = {t["content"] for t in tok["added_tokens"] if t.get("special")}
    merges = [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)

    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }

    def add(name: str, array: np.ndarray) -> None:
        array = array.astype(np.float32)
        if quantize and array.ndim == 2 and array.shape[-1] % 32 == 0:
            packed = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array)

    add("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(config["num_hidden_layers"]):
        for hf, short in names.items():
            w = weights[f"model.layers.{i}.{hf}.weight"]
            if short == "attn_q":
                w = permute(w, n_head)
            elif short == "attn_k":
                w = permute(w, n_kv)
            add(f"blk.{i}.{short}.weight", w)
    add("output_norm.weight", weights["model.norm.weight"])
    if not config.get("tie_word_embeddings", False):
        add("output.weight", weights["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def write_kobest(folder: Path, n: int = 20, splits=("train", "validation")) -> Path:
    """Small KoBEST-format files (skt/kobest_v1 field layout) built from the fixture sentences."""
    import json
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = KOREAN_LINES
    for split in splits:
        rows: dict[str, list[dict]] = {t: [] for t in ("boolq", "copa", "hellaswag", "sentineg", "wic")}
        for i in range(n):
            a, b, c, d, e = (lines[(i * 5 + k) % len(lines)] for k in range(5))
            rows["boolq"].append({"paragraph": f"{a} {b}", "question": c.rstrip(".") + "?", "label": rng.randint(0, 1)})
            rows["copa"].append(
                {
                    "premise": a,
                    "question": rng.choice(["원인", "결과"]),
                    "alternative_1": b,
                    "alternative_2": c,
                    "label": rng.randint(0, 1),
                }
            )
            rows["hellaswag"].append(
                {"context": a, "ending_1": b, "ending_2": c, "ending_3": d, "ending_4": e, "label": rng.randint(0, 3)}
            )
            rows["sentineg"].append({"sentence": a, "label": rng.randint(0, 1)})
            word = a.split()[0]
            rows["wic"].append({"word": word, "context_1": a, "context_2": b, "label": rng.randint(0, 1)})
        for task, examples in rows.items():
            with open(folder / f"{task}_{split}.jsonl", "w", encoding="utf-8") as handle:
                for example in examples:
                    handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    return folder


def extend_model(
    model_dir: Path, merged_dir: Path, out: Path, init: str = "decomposition", texts=(), input_norm: str = "init"
) -> Path:
    """The model extended to the merged tokenizer with ``init`` (no comparison), as the extend phase writes it; the
    new input rows as the init left them unless ``input_norm="base"`` (the default of ``extend``), so that a tied
    model stays tied."""
    from redwhale.config.schema import ExtendSection
    from redwhale.models.adapt import extend_and_compare

    section = ExtendSection(init=init, compare=[], calibration_chars=1000, input_norm=input_norm)
    extend_and_compare(str(model_dir), merged_dir, section, list(texts), [], [], out, None)
    return out


def tiny_config(tmp_path: Path, model: Path, lr: float = 0.01, documents: int = 150) -> dict:
    """A run config for the tiny model: every phase, in seconds."""
    import json
    import random

    rng = random.Random(0)
    corpus = tmp_path / "ko.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for i in range(documents):
            text = " ".join(rng.sample(KOREAN_LINES, 4)) + f" 문서 {i}번."
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        handle.write("{not json\n")  # counted and reported, not fatal
    stage = {"share": 0.25, "lr": lr}
    return {
        "name": "tiny",
        "run_dir": str(tmp_path / "runs"),
        "model": {"base": str(model)},
        "corpus": {"inputs": [{"path": str(corpus)}], "heldout_fraction": 0.2},
        "english": {"inputs": [{"path": "bundled:python-docs", "limit": 300}], "heldout_fraction": 0.2},
        "prepare": {"tasks": 1, "workers": 1},
        "tokenizer": {"sizes": [400, 600, 800], "min_frequency": 1, "size": "knee"},
        "extend": {
            "init": "decomposition",
            "compare": ["mean", "decomposition", "calibrated"],
            "eval_chars": 1000,
            "calibration_chars": 1000,
        },
        "train": {
            "tokens": 512,
            "sequence_length": 32,
            "micro_batch_size": 2,
            "checkpoint_every": 2,
            "tensorboard": False,
            "stages": [
                {"name": "embeddings", "trainable": {"embeddings": "all", "lm_head": "all"}, **stage},
                {"name": "odd_layers", "trainable": {"layers": "odd"}, **stage, "english_share": 0.25},
                {"name": "even_layers", "trainable": {"layers": "even"}, **stage},
                {"name": "lora", "lora": {"rank": 4, "alpha": 8}, **stage},
            ],
        },
        "eval": {
            "benchmarks": "off",
            "korean_chars": 1000,
            "english_chars": 1000,
            "max_new_tokens": 4,
            "korean_prompts": ["대한민국은"],
            "english_prompts": ["The capital"],
        },
    }


def perturb_model(model_dir: Path, out: Path, seed: int = 7, std: float = 0.01) -> Path:
    """A stand-in "instruct" model: ``model_dir`` with seeded Gaussian noise added to every parameter (a tied matrix
    once), saved with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param += std * torch.randn(param.shape, generator=generator)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out)
    return out
