"""End-to-end workload: a small decoder-only transformer trained with AdamW on CPU.

About 12.7 M parameters (7 pre-norm layers, width 384, 6 heads, context 64,
vocabulary 512, tied embeddings), dropout 0.1, a warm-up + cosine learning-rate
schedule, gradient clipping, and a shuffling ``DataLoader`` over a synthetic
corpus (a seeded Markov chain over the vocabulary, so the loss falls). The
training loop is inside ``main()``: dart's safe points are its iterations, with
the optimizer's moments, the scheduler, the loader's iterator and the random
state (dropout) all live in that frame. One torch thread.

Usage: ``python transformer_train.py [STEPS]`` (default 60). Prints the loss
every 10 steps, then ``sha256 HEX`` (the final weights) and ``peak_rss_kib N``.
"""

import hashlib
import math
import resource
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

DEFAULT_STEPS = 60
VOCAB, WIDTH, HEADS, LAYERS, CONTEXT = 512, 384, 6, 7, 64
BATCH = 8


class MarkovText(Dataset):
    """Windows of CONTEXT + 1 tokens of a seeded Markov chain (each token picks its
    successor among 8 likely ones)."""

    def __init__(self, length: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        successors = torch.randint(0, VOCAB, (VOCAB, 8), generator=g)
        picks = torch.randint(0, 8, (length,), generator=g)
        tokens = torch.empty(length, dtype=torch.long)
        tokens[0] = 0
        for i in range(1, length):
            tokens[i] = successors[tokens[i - 1], picks[i]]
        self.tokens = tokens

    def __len__(self):
        return (len(self.tokens) - 1) // CONTEXT

    def __getitem__(self, i):
        window = self.tokens[i * CONTEXT : i * CONTEXT + CONTEXT + 1]
        return window[:-1], window[1:]


class TinyGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.position = nn.Parameter(torch.zeros(CONTEXT, WIDTH))
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(CONTEXT), persistent=False)

    def forward(self, x):
        h = self.embed(x) + self.position[: x.shape[1]]
        h = self.blocks(h, mask=self.mask, is_causal=True)
        return self.norm(h) @ self.embed.weight.T


def schedule(warmup: int, total: int):
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_STEPS
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = MarkovText(40_000)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, drop_last=True)
    model = TinyGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(10, steps))
    print("parameters", sum(p.numel() for p in model.parameters()), flush=True)

    step = 0
    while step < steps:
        for x, y in loader:
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if step % 10 == 0 or step == steps - 1:
                print(f"step {step} loss {loss.item():.6f}", flush=True)
            step += 1
            if step == steps:
                break

    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    print("sha256", digest.hexdigest())
    print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main()
