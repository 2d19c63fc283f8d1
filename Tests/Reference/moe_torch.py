"""The PyTorch reference models shared by pytorch_parity.py and pytorch_mnist.py.

Plain PyTorch modules whose parameter names are the checkpoint names the Swift
package uses:

    MoEClassifier:   input -> ReLU -> moe -> output
        input            nn.Linear(in, D)
        moe.gate         nn.Linear(D, E)              router logits
        moe.experts.{i}  up: nn.Linear(D, H), ReLU, down: nn.Linear(H, D)
        output           nn.Linear(D, classes)

    DenseClassifier: input -> ReLU -> ffn -> output
        ffn              up: nn.Linear(D, H), ReLU, down: nn.Linear(H, D)

There is no activation after the MoE layer (or after the dense FFN).

Routing, for each row n of the MoE input x [N, D]:
    p[n]      = softmax(gate(x[n]))                      over all E experts
    e[n, :]   = indices of the k largest p[n, i], largest first; equal
                probabilities are ordered by the lower expert index (a stable
                descending sort, not torch.topk, which promises no order)
    w[n, j]   = p[n, e[n, j]] / sum_j' p[n, e[n, j']]    renormalised (Mixtral)
    y[n]      = sum_j w[n, j] * expert_{e[n, j]}(x[n])

Load-balancing loss (Switch Transformer style), over the N rows of a batch:
    f_i = (number of rows whose top-k contains expert i) / N     (sum f = k)
    P_i = mean_n p[n, i]
    aux = E * sum_i f_i * P_i
f is a count, a constant for autograd: the gradient of aux reaches the gate
only through P. With perfectly balanced routing f_i = k/E and P_i = 1/E, so
aux = k; for k = 2 the balanced value is 2.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Expert(nn.Module):
    """One feed-forward expert: up (D -> H), ReLU, down (H -> D)."""

    def __init__(self, d_model, d_hidden):
        super().__init__()
        self.up = nn.Linear(d_model, d_hidden)
        self.down = nn.Linear(d_hidden, d_model)

    def forward(self, x):
        return self.down(F.relu(self.up(x)))


def route(logits, k):
    """Softmax over all experts, then the top-k per row and their renormalised weights.

    Returns (probs [N, E], index [N, k] int64, weight [N, k]). The selection is
    not differentiable (it is an argsort of detached values); the weights are,
    through the gathered probabilities.
    """
    probs = torch.softmax(logits, dim=-1)
    order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices
    index = order[:, :k]
    chosen = probs.gather(1, index)
    weight = chosen / chosen.sum(dim=-1, keepdim=True)
    return probs, index, weight


def load_balancing_loss(probs, index, num_experts):
    """E * sum_i f_i * P_i with f_i a (gradient-free) fraction of rows, P_i the mean probability."""
    n = probs.shape[0]
    # Every row picks k distinct experts, so counting slots counts rows.
    counts = torch.bincount(index.reshape(-1), minlength=num_experts)
    f = counts.to(probs.dtype) / n
    P = probs.mean(dim=0)
    return num_experts * torch.sum(f * P)


class MoELayer(nn.Module):
    """Gate + experts. forward(x) -> (y, aux, (probs, index, weight))."""

    def __init__(self, d_model, d_hidden, num_experts, k):
        super().__init__()
        self.num_experts = num_experts
        self.k = k
        self.gate = nn.Linear(d_model, num_experts)
        self.experts = nn.ModuleList(Expert(d_model, d_hidden) for _ in range(num_experts))

    def forward(self, x):
        probs, index, weight = route(self.gate(x), self.k)
        y = torch.zeros_like(x)
        # Dispatch: each expert runs once, on the rows routed to it.
        for i, expert in enumerate(self.experts):
            rows, slots = torch.nonzero(index == i, as_tuple=True)
            if rows.numel() == 0:
                continue
            out = expert(x.index_select(0, rows))
            out = out * weight[rows, slots].unsqueeze(1)
            y = y.index_add(0, rows, out)
        aux = load_balancing_loss(probs, index, self.num_experts)
        return y, aux, (probs, index, weight)


class MoEClassifier(nn.Module):
    def __init__(self, d_in, d_model, d_hidden, num_experts, k, num_classes):
        super().__init__()
        self.input = nn.Linear(d_in, d_model)
        self.moe = MoELayer(d_model, d_hidden, num_experts, k)
        self.output = nn.Linear(d_model, num_classes)

    def forward(self, x):
        """Returns (logits, aux, (probs, index, weight))."""
        h = F.relu(self.input(x))
        y, aux, routing = self.moe(h)
        return self.output(y), aux, routing


class DenseClassifier(nn.Module):
    def __init__(self, d_in, d_model, d_hidden, num_classes):
        super().__init__()
        self.input = nn.Linear(d_in, d_model)
        self.ffn = Expert(d_model, d_hidden)
        self.output = nn.Linear(d_model, num_classes)

    def forward(self, x):
        return self.output(self.ffn(F.relu(self.input(x))))


def moe_loss(model, x, labels, alpha):
    """(total, ce, aux, logits, routing) for an MoEClassifier."""
    logits, aux, routing = model(x)
    ce = F.cross_entropy(logits, labels)
    return ce + alpha * aux, ce, aux, logits, routing


def fill_missing_grads(model):
    """Give every parameter a gradient tensor (zeros where autograd produced none).

    An expert that receives no rows takes no part in the graph, so its .grad
    stays None and torch.optim.Adam would skip it for that step entirely (no
    moment decay, no step-count increment). With a zero gradient instead, Adam
    updates every parameter at every step, which is what an optimiser that
    keeps one gradient buffer per parameter does; the fixture assumes that.
    """
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
