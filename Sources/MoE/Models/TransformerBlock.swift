// TransformerBlock: one pre-LayerNorm decoder block of GPT-2.
//
//     x = x + attention(ln1(x))        tokens look at earlier tokens
//     x = x + feedForward(ln2(x))      each token is processed on its own
//
// The "+ x" is the residual stream: every sublayer *adds* its contribution to
// a running sum instead of replacing it. Its backward is why deep stacks
// train: the derivative of x + f(x) is I + f′(x), so the gradient reaching a
// block's output goes straight through to its input (the I) as well as
// through the sublayer (Notebooks/part4-gpt.md, §5). Pre-LN (the LayerNorm
// inside the branch, not after the sum) keeps that identity path clean.
//
// The feed-forward sublayer is a `FeedForward`: a dense MLP or an MoE layer;
// the block treats both alike.
//
// Legend: B sequences, T positions, C model width, N = B·T tokens.

/// LayerNorm → causal self-attention → residual, LayerNorm → feed-forward → residual.
public final class TransformerBlock: Layer {
    public let norm1: LayerNorm
    public let attention: CausalSelfAttention
    public let norm2: LayerNorm
    public let feedForward: FeedForward
    private var shape: [Int] = []   // [B, T, C] of the last forward

    public init(width: Int, heads: Int, feedForward: FeedForward, rng: inout Xoshiro256) {
        norm1 = LayerNorm(width: width)
        attention = CausalSelfAttention(width: width, heads: heads, rng: &rng)
        norm2 = LayerNorm(width: width)
        self.feedForward = feedForward
    }

    public var width: Int { norm1.width }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("ln1", norm1.namedParameters) + prefixed("attn", attention.namedParameters)
            + prefixed("ln2", norm2.namedParameters)
            + prefixed(feedForward is MoELayer ? "moe" : "mlp", feedForward.namedParameters)
    }

    /// x [B, T, C] -> [B, T, C]
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 3 && x.shape[2] == width,
                     "TransformerBlock(\(width)): input has shape \(x.shape), expected [B, T, \(width)]")
        shape = x.shape
        let n = x.shape[0] * x.shape[1], c = width
        var h = x
        let a = attention.forward(norm1.forward(h))                                    // [B, T, C]
        h += a
        let f = feedForward.forward(norm2.forward(h).reshaped([n, c])).reshaped(shape)  // [N, C] inside, [B, T, C] out
        h += f
        return h
    }

    /// In the forward pass this was h = x + A(ln1(x)), y = h + F(ln2(h)). So now,
    /// the residual rule d(x + f(x)) = dx + f′ᵀdx, applied twice from the end:
    ///
    ///     dh = dy + ln2ᵀ(Fᵀ(dy))
    ///     dx = dh + ln1ᵀ(Aᵀ(dh))
    ///
    /// (Aᵀ, Fᵀ, lnᵀ: each sublayer's backward.) dy [B, T, C] -> dx [B, T, C].
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == shape, "TransformerBlock.backward: dy has shape \(dy.shape), forward output was \(shape)")
        let n = shape[0] * shape[1], c = width
        var dh = dy
        dh += norm2.backward(feedForward.backward(dy.reshaped([n, c])).reshaped(shape))
        var dx = dh
        dx += norm1.backward(attention.backward(dh))
        return dx
    }
}
