// TokenWindows: a token stream seen as training examples, without copying it.
//
// A language model trains on windows of T + 1 consecutive tokens: the first T
// are the input, the last T (shifted by one) the targets, so position t learns
// to predict token t + 1. Windows start every `stride` tokens:
//
//     stream   0 1 2 3 4 5 6 7 8 9 …
//     window 0 [0 1 2 3] → targets [1 2 3 4]        (T = 4, stride = 4)
//     window 1         [4 5 6 7] → targets [5 6 7 8]
//
// stride = T tiles the stream: every token is a target exactly once (but the
// last < T + 1 tokens, which do not fill a window). stride < T overlaps
// windows, so a token is seen in several contexts. A window is only a start
// offset; `batch` copies the B windows of one step into the model's input
// and nothing else, so the corpus is never duplicated per window (the notes'
// "streaming dataset"). Notebooks/part4-gpt.md, §7.
//
// Legend: B windows per batch, T context length.

/// Windows of `context` + 1 tokens over `tokens[range]`, every `stride` tokens.
public struct TokenWindows {
    /// The whole stream (shared with the other split: arrays are copy-on-write).
    public let tokens: [Int]
    /// The part of `tokens` this split may read; windows never leave it.
    public let range: Range<Int>
    public let context: Int
    public let stride: Int

    public init(tokens: [Int], range: Range<Int>, context: Int, stride: Int) {
        precondition(context > 0 && stride > 0, "TokenWindows: context \(context) and stride \(stride) must be positive")
        precondition(range.lowerBound >= 0 && range.upperBound <= tokens.count,
                     "TokenWindows: range \(range) outside the \(tokens.count) tokens")
        self.tokens = tokens
        self.range = range
        self.context = context
        self.stride = stride
    }

    /// How many windows fit: starts s = 0, stride, 2·stride, … with s + T + 1 ≤ count.
    public var count: Int {
        range.count < context + 1 ? 0 : (range.count - context - 1) / stride + 1
    }

    /// Offset in `tokens` of window i's first input token.
    public func start(_ i: Int) -> Int { range.lowerBound + i * stride }

    /// Inputs and targets of the windows `indices`, one after another: two [B·T] arrays.
    /// - Complexity: O(B·T), two copies of each window and nothing more.
    public func batch<Indices: Collection>(_ indices: Indices) -> (inputs: [Int], targets: [Int])
        where Indices.Element == Int {
        var inputs: [Int] = [], targets: [Int] = []
        inputs.reserveCapacity(indices.count * context)
        targets.reserveCapacity(indices.count * context)
        for i in indices {
            precondition(i >= 0 && i < count, "TokenWindows: window \(i) outside 0..<\(count)")
            let s = start(i)
            inputs += tokens[s..<(s + context)]
            targets += tokens[(s + 1)..<(s + context + 1)]
        }
        return (inputs, targets)
    }
}

/// A token stream split into a training part (the first tokens) and a
/// validation part (the rest), as nanoGPT splits Tiny Shakespeare: the
/// validation text comes later in the play than anything trained on, an
/// honest held-out set. Windows never straddle the cut.
public struct TokenSplit {
    public let train: TokenWindows
    public let validation: TokenWindows

    /// - Parameters:
    ///   - cut: tokens[0..<cut] train, tokens[cut...] validate.
    ///   - validationStride: stride of the validation windows (default `context`:
    ///     each held-out token is predicted once).
    public init(tokens: [Int], cut: Int, context: Int, stride: Int, validationStride: Int? = nil) {
        precondition(cut >= 0 && cut <= tokens.count, "TokenSplit: cut \(cut) outside 0...\(tokens.count)")
        train = TokenWindows(tokens: tokens, range: 0..<cut, context: context, stride: stride)
        validation = TokenWindows(tokens: tokens, range: cut..<tokens.count, context: context,
                                  stride: validationStride ?? context)
    }

    /// Holds out the last `validationFraction` of the tokens.
    public init(tokens: [Int], validationFraction: Double, context: Int, stride: Int, validationStride: Int? = nil) {
        precondition(validationFraction >= 0 && validationFraction < 1,
                     "TokenSplit: validation fraction \(validationFraction) outside [0, 1)")
        let cut = tokens.count - Int((Double(tokens.count) * validationFraction).rounded())
        self.init(tokens: tokens, cut: cut, context: context, stride: stride, validationStride: validationStride)
    }
}
