// Embedding: how a language model turns token ids into vectors.
//
// A token id is an index, not a number: token 7 is not "more" than token 6. So
// the model keeps a table with one learned row per token and *looks up* the
// row, which is the same as multiplying a one-hot vector by the table, without
// the multiplication. Attention on its own cannot tell positions apart (it sees
// a set, not a sequence), so a second table holds one learned row per position
// 0..<T_max, and the two rows are added (GPT-2's "wte + wpe"):
//
//     x[b, t, :] = tokenTable[token[b, t], :] + positionTable[t, :]
//
// Backward is the lookup run in reverse: each output row's gradient is *added*
// to the table rows it was read from. A token that occurs five times in a batch
// collects five contributions; rows of tokens that did not occur get nothing.
// Derivation: Notebooks/part4-gpt.md, §2.
//
// Legend: B sequences in the batch, T positions per sequence (T ≤ T_max),
// V vocabulary size, C model width.

/// Token embedding plus learned position embedding.
///
///     let embed = Embedding(vocabularySize: 65, contextLength: 64, width: 32, rng: &rng)
///     let x = embed.forward(tokens: ids, batch: 4)   // ids.count = 4·T  ->  x [4, T, 32]
public final class Embedding {
    public let vocabularySize: Int
    public let contextLength: Int
    public let width: Int
    public let tokenTable: Parameter      // [V, C]
    public let positionTable: Parameter   // [T_max, C]
    private var tokens: [Int] = []        // [B·T], cached by forward
    private var batch = 0, time = 0

    /// Both tables start as N(0, 0.02²), GPT-2's initialisation: small enough
    /// that the first logits are near 0 (a uniform first guess, loss ≈ ln V).
    public init(vocabularySize: Int, contextLength: Int, width: Int, rng: inout Xoshiro256) {
        precondition(vocabularySize > 0 && contextLength > 0 && width > 0,
                     "Embedding: sizes must be positive, got V \(vocabularySize), T \(contextLength), C \(width)")
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
        self.width = width
        tokenTable = Parameter(.normal([vocabularySize, width], std: 0.02, rng: &rng))
        positionTable = Parameter(.normal([contextLength, width], std: 0.02, rng: &rng))
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        [("token", tokenTable), ("position", positionTable)]
    }

    /// tokens [B·T] (sequence after sequence) -> x [B, T, C].
    /// - Complexity: O(B·T·C), two row reads per token.
    public func forward(tokens: [Int], batch: Int) -> Tensor {
        precondition(batch > 0 && tokens.count % batch == 0,
                     "Embedding: \(tokens.count) tokens do not split into \(batch) sequences")
        let t = tokens.count / batch, c = width
        precondition(t <= contextLength, "Embedding: sequences of \(t) tokens, the model's context is \(contextLength)")
        self.tokens = tokens
        self.batch = batch
        self.time = t
        var x = Tensor.zeros([batch, t, c])
        x.data.withUnsafeMutableBufferPointer { out in
            tokenTable.value.data.withUnsafeBufferPointer { wte in
                positionTable.value.data.withUnsafeBufferPointer { wpe in
                    for n in 0..<tokens.count {
                        let id = tokens[n]
                        precondition(id >= 0 && id < vocabularySize, "Embedding: token \(id) outside 0..<\(vocabularySize)")
                        let row = out.baseAddress! + n * c
                        let tokenRow = wte.baseAddress! + id * c
                        let positionRow = wpe.baseAddress! + (n % t) * c
                        for j in 0..<c { row[j] = tokenRow[j] + positionRow[j] }
                    }
                }
            }
        }
        return x
    }

    /// Backward of x[b, t] = tokenTable[token[b, t]] + positionTable[t].
    ///
    /// x[b, t] depends on one token row and one position row, each with
    /// derivative 1 (the identity), so for dx = dL/dx [B, T, C]:
    ///
    ///     dL/dtokenTable[v]    += Σ over (b, t) with token[b, t] = v of dx[b, t]
    ///     dL/dpositionTable[t] += Σ_b dx[b, t]
    ///
    /// The input is a list of integers, which has no gradient; nothing is
    /// returned. Uses the tokens cached by `forward`.
    public func backward(_ dx: Tensor) {
        precondition(dx.shape == [batch, time, width],
                     "Embedding.backward: dx has shape \(dx.shape), forward output was [\(batch), \(time), \(width)]")
        let c = width
        dx.data.withUnsafeBufferPointer { g in
            tokenTable.grad.data.withUnsafeMutableBufferPointer { dwte in
                positionTable.grad.data.withUnsafeMutableBufferPointer { dwpe in
                    for n in 0..<tokens.count {
                        let row = g.baseAddress! + n * c
                        let tokenRow = dwte.baseAddress! + tokens[n] * c
                        let positionRow = dwpe.baseAddress! + (n % time) * c
                        for j in 0..<c {
                            tokenRow[j] += row[j]
                            positionRow[j] += row[j]
                        }
                    }
                }
            }
        }
    }
}
