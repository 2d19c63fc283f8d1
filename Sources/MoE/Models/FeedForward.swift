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
//   * sparse: an `MoELayer` of GELU experts with any router and balancing methods
//     of Router.swift and RoutingSetup.swift.
//
// What the block's owner does need to know, the auxiliary loss and the number
// of parameters a token uses, is part of the protocol; a dense FFN answers 0
// and "all of them".
//
// Legend: N tokens, C model width, H hidden width of an MLP, E experts, K experts per token.

/// The feed-forward sublayer of a transformer block.   x [N, C] -> y [N, C]
public protocol FeedForward: Layer {
    /// Σ α·value over the layer's balancing methods in the last forward (the
    /// Switch loss, z-loss, …); 0 for a dense FFN. Backward already includes
    /// their gradients, so the model only adds this to the reported loss.
    var weightedAuxiliaryLoss: Double { get }
    /// Parameters one token uses: all of them for a dense FFN, router + k experts for an MoE.
    var activeParameterCount: Int { get }
}

extension Expert: FeedForward {
    public var weightedAuxiliaryLoss: Double { 0 }
    public var activeParameterCount: Int { parameterCount }
}

extension MoELayer: FeedForward {
    public var weightedAuxiliaryLoss: Double { weightedAuxLoss }
}
