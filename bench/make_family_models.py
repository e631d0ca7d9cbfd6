"""Random-initialised models of real size for the families with no real model reachable here
(Sentence-T5 base, ModernBERT base, Qwen3-Embedding-0.6B), for speed only: the same layer
shapes, heads and pooling as the published models, random weights (seed 0), and
all-MiniLM-L6-v2's WordPiece tokenizer so that sentences have realistic token counts.

    python bench/make_family_models.py MINILM_DIR OUT_DIR [t5 modernbert qwen3]

Writes OUT_DIR/<family>/, a sentence-transformers folder that both engines load. The vectors
mean nothing; their speed is what bench/families.sh measures.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer, models
from transformers import AutoModel, ModernBertConfig, Qwen3Config, T5Config

minilm, out = Path(sys.argv[1]), Path(sys.argv[2])
wanted = sys.argv[3:] or ["t5", "modernbert", "qwen3"]
VOCAB = 30522  # the WordPiece vocabulary; pad 0, [CLS] 101, [SEP] 102

configs = {
    # sentence-t5-base's encoder: T5 v1.0 base.
    "t5": T5Config(vocab_size=VOCAB, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                   num_heads=12, feed_forward_proj="relu", relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, pad_token_id=0, eos_token_id=102,
                   is_encoder_decoder=False, use_cache=False),
    # answerdotai/ModernBERT-base.
    "modernbert": ModernBertConfig(vocab_size=VOCAB, hidden_size=768, intermediate_size=1152,
                                   num_hidden_layers=22, num_attention_heads=12,
                                   global_attn_every_n_layers=3, local_attention=128,
                                   max_position_embeddings=8192, pad_token_id=0, cls_token_id=101,
                                   sep_token_id=102, bos_token_id=101, eos_token_id=102),
    # Qwen/Qwen3-Embedding-0.6B (its 151,669-row table replaced by the WordPiece one).
    "qwen3": Qwen3Config(vocab_size=VOCAB, hidden_size=1024, intermediate_size=3072,
                         num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                         head_dim=128, max_position_embeddings=32768, rope_theta=1000000.0,
                         rms_norm_eps=1e-6, tie_word_embeddings=True, pad_token_id=0,
                         eos_token_id=102, use_cache=False),
}
pooling = {"t5": "mean", "modernbert": "mean", "qwen3": "lasttoken"}

for name in wanted:
    torch.manual_seed(0)
    d = out / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    AutoModel.from_config(configs[name]).save_pretrained(d)
    shutil.copy(minilm / "tokenizer.json", d / "tokenizer.json")
    shutil.copy(minilm / "vocab.txt", d / "vocab.txt")
    tc = {"tokenizer_class": "BertTokenizer", "model_max_length": 256, "do_lower_case": True,
          "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
          "mask_token": "[MASK]"}
    if name == "qwen3":
        tc["padding_side"] = "left"
    (d / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    word = models.Transformer(str(d), max_seq_length=256)
    mods = [word, models.Pooling(word.get_word_embedding_dimension(), pooling[name])]
    if name == "t5":
        mods.append(models.Dense(768, 768, bias=False, activation_function=torch.nn.Identity()))
    mods.append(models.Normalize())
    SentenceTransformer(modules=mods, device="cpu").save(str(d))
    print(d, file=sys.stderr)
