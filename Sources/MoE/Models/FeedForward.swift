// FeedForward: the seam where a transformer block becomes dense or sparse.
//
// A GPT block has two sublayers: attention, where tokens exchange information,
// and a feed-forward network, which works on each token alone. The second is
// where an MoE goes: instead of one MLP that every token uses, E of them
// (experts) and a router that sends each token to k (Notebooks/part4-gpt.md, §5).
// Both map [N, C] -> [N, C] token by token, so the block only needs this
// protocol and never learns which one it holds:
//
//   * dense: one `Expert` with GELU, Linear(C→H) → GELU → Linear(H→C), GPT-2's MLP
//     (a dense FFN *is* an MoE with one expert that every token uses);
//   * sparse: an `MoELayer` of GELU experts with its router and balancing loss.
//
// What the block's owner does need to know, the auxiliary loss and the number
// of parameters a token uses, is part of the protocol; a dense FFN answers 0
// and "all of them".
//
// Legend: N tokens, C model width, H hidden width of an MLP, E experts, K experts per token.

/// The feed-forward sublayer of a transformer block.   x [N, C] -> y [N, C]
public protocol FeedForward: Layer {
    /// The unweighted auxiliary (load-balancing) loss of the last forward; 0 for a dense FFN.
    var auxiliaryLoss: Double { get }
    /// Its weight α in the training loss; 0 for a dense FFN. Backward already
    /// includes α·∂aux, so the model only adds α·aux to the reported loss.
    var auxiliaryLossWeight: Double { get }
    /// Parameters one token uses: all of them for a dense FFN, router + k experts for an MoE.
    var activeParameterCount: Int { get }
}

extension Expert: FeedForward {
    public var auxiliaryLoss: Double { 0 }
    public var auxiliaryLossWeight: Double { 0 }
    public var activeParameterCount: Int { parameterCount }
}

extension MoELayer: FeedForward {
    public var auxiliaryLoss: Double { auxLoss.value }
    public var auxiliaryLossWeight: Double { Double(auxLossWeight) }
}
