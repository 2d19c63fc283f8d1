"""The walkthrough's four modules in PyTorch, written here from Part 2's description.

Part 2 of "Deconstructing MoE from Scratch" names four classes and prints most
of them: Expert, TopKGating, MoELayer, MoEClassifier. These are those classes,
with the module structure (and so the state_dict keys) Part 2 gives them, so a
checkpoint written by `mnist-moe` loads here with strict key checking:

    MoEClassifier:   input_proj -> ReLU -> moe -> ReLU -> output_proj
        input_proj               nn.Linear(in, d)
        moe.gating.gate          nn.Linear(d, N, bias=False)        router logits
        moe.gating.noise_weights nn.Parameter(zeros(N))             learned noise scale per expert
        moe.experts.{i}.net      Sequential(Linear(d, h), ReLU, Linear(h, d))  -> net.0, net.2
        output_proj              nn.Linear(d, classes)

    DenseClassifier: input_proj -> ReLU -> ffn -> ReLU -> output_proj
        ffn.net                  Sequential(Linear(d, h), ReLU, Linear(h, d))
        (Part 2 never prints its dense baseline; this one is the MoE with one
        expert that every row uses, the ReLU after it included, as in Swift.)

Routing (TopKGating.forward), for each row b of x [B, d], N experts:
    logits    = gate(x)                                   [B, N]
    training: logits += randn_like(logits) * softplus(noise_weights)
    probs     = softmax(logits)                           noisy in training
    index     = the k largest probs per row, largest first. Part 2 calls
                torch.topk, whose order among equal values is unspecified;
                here a stable descending sort, so ties go to the lower index
                (the fixtures are chosen with clear margins, so this never
                decides anything in them)
    weight    = top_k_values / (top_k_values.sum(-1) + 1e-8)   renormalised
Pass `noise=` to use a given ε instead of drawing one (the fixtures do, so
Swift can use the very same draws).

MoELayer.forward runs every expert on every row and gathers the k chosen,
as Part 2 does ("educational"; Swift runs each expert on its own rows only,
which gives the same numbers), and returns (output, aux_loss, expert_counts):
    f_i = (rows whose top-k contains i) / B     (sum f = k), a constant
    p_i = mean_b probs[b, i]                    the noisy probabilities
    aux = N * sum_i f_i * p_i                   balanced: k
    expert_counts[i] = rows routed to i (Part 2 returns a tensor of this name
    without saying what it holds; this is our reading)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Expert(nn.Module):
    """Part 2's Expert(input_dim, hidden_dim, output_dim): Linear, ReLU, Linear."""

    def __init__(self, input_dim, hidden_dim, output_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim))

    def forward(self, x):
        return self.net(x)


class TopKGating(nn.Module):
    """Part 2's TopKGating(input_dim, num_experts, top_k): bias-free gate, learned noise, top-k, renormalise."""

    def __init__(self, input_dim, num_experts, top_k=2):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(input_dim, num_experts, bias=False)
        self.noise_weights = nn.Parameter(torch.zeros(num_experts))

    def forward(self, x, noise=None):
        """Returns (top_k_values [B, k], top_k_indices [B, k], gate_probs [B, N])."""
        logits = self.gate(x)
        if self.training:
            eps = torch.randn_like(logits) if noise is None else noise
            logits = logits + eps * F.softplus(self.noise_weights).unsqueeze(0)
        gate_probs = torch.softmax(logits, dim=-1)
        top_k_indices = torch.sort(gate_probs.detach(), dim=-1, descending=True, stable=True).indices[:, : self.top_k]
        top_k_values = gate_probs.gather(1, top_k_indices)
        top_k_values = top_k_values / (top_k_values.sum(dim=-1, keepdim=True) + 1e-8)
        return top_k_values, top_k_indices, gate_probs


class MoELayer(nn.Module):
    """Part 2's MoELayer: every expert on every row, gather the k chosen, weight and sum."""

    def __init__(self, input_dim, output_dim, num_experts=8, top_k=2, expert_hidden_dim=128):
        super().__init__()
        self.num_experts = num_experts
        self.gating = TopKGating(input_dim, num_experts, top_k)
        self.experts = nn.ModuleList(Expert(input_dim, expert_hidden_dim, output_dim) for _ in range(num_experts))
        self.last_routing = None

    def forward(self, x, noise=None):
        top_k_values, top_k_indices, gate_probs = self.gating(x, noise)
        expert_outputs = torch.stack([expert(x) for expert in self.experts], dim=1)      # [B, N, out]
        index = top_k_indices.unsqueeze(-1).expand(-1, -1, expert_outputs.shape[-1])
        selected = torch.gather(expert_outputs, 1, index)                                  # [B, k, out]
        output = (selected * top_k_values.unsqueeze(-1)).sum(dim=1)
        batch = x.shape[0]
        expert_mask = torch.zeros(batch, self.num_experts).scatter_add_(
            1, top_k_indices, torch.ones_like(top_k_values))
        f = expert_mask.sum(0) / batch
        p = gate_probs.mean(0)
        auxiliary_loss = self.num_experts * (f * p).sum()
        expert_counts = expert_mask.sum(0)
        self.last_routing = (gate_probs, top_k_indices, top_k_values)
        return output, auxiliary_loss, expert_counts


class MoEClassifier(nn.Module):
    """Part 2's MoEClassifier(input_dim=784, hidden_dim=256, num_classes=10, num_experts=8, top_k=2)."""

    def __init__(self, input_dim=784, hidden_dim=256, num_classes=10, num_experts=8, top_k=2, expert_hidden_dim=128):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.moe = MoELayer(hidden_dim, hidden_dim, num_experts=num_experts, top_k=top_k,
                            expert_hidden_dim=expert_hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, num_classes)

    def forward(self, x, noise=None):
        """Returns (logits, aux_loss, expert_counts)."""
        x = F.relu(self.input_proj(x))
        x, aux_loss, expert_counts = self.moe(x, noise)
        x = F.relu(x)
        return self.output_proj(x), aux_loss, expert_counts


class DenseClassifier(nn.Module):
    """The dense baseline: the MoE classifier with one always-used expert."""

    def __init__(self, input_dim=784, hidden_dim=256, num_classes=10, expert_hidden_dim=128):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.ffn = Expert(hidden_dim, expert_hidden_dim, hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, num_classes)

    def forward(self, x):
        return self.output_proj(F.relu(self.ffn(F.relu(self.input_proj(x)))))


def moe_loss(model, x, labels, alpha, noise=None):
    """(total, ce, aux, logits, (probs, index, weight)): L = L_task + alpha * L_balance, as Part 1 writes it."""
    logits, aux, _ = model(x, noise)
    ce = F.cross_entropy(logits, labels)
    return ce + alpha * aux, ce, aux, logits, model.moe.last_routing


def fill_missing_grads(model):
    """Give every parameter a gradient tensor (zeros where autograd produced none).

    Part 2's layer runs every expert on every row, so every expert is in the
    graph; an expert no row chose still gets an exact zero gradient through the
    gather. Kept for safety: Adam then steps every parameter at every step, as
    Swift's Adam, which keeps one gradient buffer per parameter, does.
    """
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
