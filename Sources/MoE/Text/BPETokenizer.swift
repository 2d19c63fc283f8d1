// BPETokenizer: byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's
// byte-level variant), trained on the corpus.
//
// Start with 256 tokens, one per byte value, so every input, valid UTF-8 or
// not, can be encoded. Then, repeatedly: find the adjacent pair of tokens that
// occurs most often in the corpus, give it a new id 256, 257, …, and replace
// every occurrence. "t"+"h" → "th", "th"+"e" → "the", " "+"the" → " the". Stop
// at the requested vocabulary size V (the notes use 10,000), or earlier when
// no pair occurs twice. The list of merges, in order, *is* the tokenizer:
// encoding a new text replays them, lowest rank first.
//
// Pre-tokenisation: merges never cross the boundary of a "chunk": an optional
// single space followed by a run of letters, of digits or of punctuation, or a
// run of other whitespace (GPT-2 splits the same way with a regex). Without it
// frequent pairs would glue words to their neighbours ("e t" across "the tree")
// and the vocabulary would fill with fragments of phrases. Bytes ≥ 0x80 count
// as letters, so the bytes of a UTF-8 character stay in one chunk.
// A run longer than `maxChunk` (64) bytes is cut into pieces of at most 64:
// ordinary text never has one (Tiny Shakespeare's longest chunk is 16 bytes,
// these notes' 54), but a text without spaces, or one long line of digits,
// would otherwise be a single chunk, and both training and encoding cost grow
// with the square of a chunk's length (each merge rescans the chunk). With the
// cap, no token is longer than 64 bytes, which also bounds what a saved
// tokenizer may hold.
//
// Training cost. Recounting every pair for each of ~10,000 merges over a 1 MB
// corpus would be ~10¹⁰ steps. Instead: count each distinct chunk once (with
// its frequency; Tiny Shakespeare has ~25,000), keep the pair counts and, per
// pair, the chunks that contain it; a merge then touches only those chunks,
// and within each only the pairs next to a replacement, and a max-heap with
// lazy deletion finds the next most frequent pair.
// Ties go to the pair with the smaller ids, so training is deterministic.
// Notebooks/part4-gpt.md, §7.
import Foundation

/// Byte-level BPE: 256 byte tokens plus one token per learned merge.
///
///     let bpe = BPETokenizer(training: text, vocabularySize: 10_000)
///     let ids = bpe.encode("To be, or not to be")
///     bpe.decode(ids)   // "To be, or not to be"
public struct BPETokenizer: Tokenizer {
    /// Merge i creates token 256 + i from the pair (left, right).
    public let merges: [(left: Int, right: Int)]
    private let ranks: [UInt64: Int]   // pair key -> merge index
    private let pieces: [[UInt8]]      // the bytes of every token [V]

    public var kind: String { "bpe" }
    public var vocabularySize: Int { 256 + merges.count }

    /// Learns merges from the UTF-8 bytes of `text` until `vocabularySize` tokens
    /// exist or no pair occurs twice.
    public init(training text: String, vocabularySize: Int) {
        self.init(validMerges: BPETokenizer.train(Array(text.utf8), vocabularySize: vocabularySize))
    }

    /// Rebuilds a saved tokenizer. Merge i may only combine tokens that exist
    /// before it (ids < 256 + i), and no token may be longer than `maxChunk`
    /// bytes (training never makes one). The lengths are checked before any
    /// piece is built, so merges that double in length cannot make gigabytes of
    /// pieces; `expectedVocabularySize`, when given, is checked first of all.
    public init(merges: [[Int]], source: String, expectedVocabularySize: Int? = nil) throws {
        if let v = expectedVocabularySize, v != 256 + merges.count {
            throw TextError(file: source, problem: "bpe tokenizer has \(256 + merges.count) tokens (256 bytes + \(merges.count) merges), "
                            + "the model \(v)")
        }
        var list: [(left: Int, right: Int)] = []
        var length = [Int](repeating: 1, count: 256)
        length.reserveCapacity(256 + merges.count)
        for (i, pair) in merges.enumerated() {
            guard pair.count == 2, pair.allSatisfy({ $0 >= 0 && $0 < 256 + i }) else {
                throw TextError(file: source, problem: "bpe merge \(i) is \(pair), expected two ids below \(256 + i)")
            }
            let bytes = length[pair[0]] + length[pair[1]]
            guard bytes <= BPETokenizer.maxChunk else {
                throw TextError(file: source, problem: "bpe merge \(i) makes a token of \(bytes) bytes, "
                                + "longer than the \(BPETokenizer.maxChunk) a chunk may have")
            }
            length.append(bytes)
            list.append((pair[0], pair[1]))
        }
        self.init(validMerges: list)
    }

    private init(validMerges merges: [(left: Int, right: Int)]) {
        self.merges = merges
        var ranks: [UInt64: Int] = [:]
        var pieces = (0..<256).map { [UInt8($0)] }
        for (i, m) in merges.enumerated() {
            ranks[BPETokenizer.key(m.left, m.right)] = i
            pieces.append(pieces[m.left] + pieces[m.right])
        }
        self.ranks = ranks
        self.pieces = pieces
    }

    /// The bytes a token stands for.
    public func bytes(of token: Int) -> [UInt8] { pieces[token] }

    public func encode(_ text: String) -> [Int] { encode(bytes: Array(text.utf8)) }

    /// Chunk by chunk, replaying the merges; repeated chunks (most words) are
    /// encoded once and looked up after that.
    /// - Complexity: O(n) chunk lookups plus, per distinct chunk of length m ≤ 64, O(m²) integer
    ///   compares and O(m) dictionary lookups.
    public func encode(bytes: [UInt8]) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(bytes.count / 2)
        var cache: [ArraySlice<UInt8>: [Int]] = [:]
        for range in BPETokenizer.chunks(bytes) {
            let chunk = bytes[range]
            if let ids = cache[chunk] { out += ids; continue }
            let ids = encodeChunk(chunk)
            cache[chunk] = ids
            out += ids
        }
        return out
    }

    /// Within one chunk: while some adjacent pair has a merge, apply the one
    /// learned first (lowest rank) everywhere in the chunk. This replays
    /// training's order, so a chunk seen in training splits as it did there.
    ///
    /// The rank of every adjacent pair is looked up once; after a merge only the
    /// pairs next to a new token are looked up again (the others are copied), so
    /// a pass costs the chunk's length in integer compares plus a lookup per
    /// replacement.
    func encodeChunk(_ chunk: ArraySlice<UInt8>) -> [Int] {
        var ids = chunk.map(Int.init)
        guard ids.count >= 2 else { return ids }
        func rank(_ a: Int, _ b: Int) -> Int { ranks[BPETokenizer.key(a, b)] ?? Int.max }
        var pairRanks = (0..<(ids.count - 1)).map { rank(ids[$0], ids[$0 + 1]) }   // rank of (ids[i], ids[i+1])
        while let best = pairRanks.min(), best != Int.max {
            // Ranks are unique per pair, so rank == best finds exactly the pair merges[best].
            var out: [Int] = [], outRanks: [Int] = []
            out.reserveCapacity(ids.count)
            outRanks.reserveCapacity(pairRanks.count)
            var i = 0
            var previousMerged = false
            while i < ids.count {
                let merged = i + 1 < ids.count && pairRanks[i] == best
                out.append(merged ? 256 + best : ids[i])
                if out.count >= 2 {
                    // Two tokens that were neighbours before keep their pair's rank.
                    outRanks.append(merged || previousMerged ? rank(out[out.count - 2], out[out.count - 1]) : pairRanks[i - 1])
                }
                previousMerged = merged
                i += merged ? 2 : 1
            }
            ids = out
            pairRanks = outRanks
        }
        return ids
    }

    /// The exact bytes of `tokens` (invalid UTF-8 included).
    public func decodeBytes(_ tokens: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        for t in tokens {
            precondition(t >= 0 && t < vocabularySize, "BPETokenizer.decode: token \(t) outside 0..<\(vocabularySize)")
            out += pieces[t]
        }
        return out
    }

    /// The text of `tokens`; byte sequences that are not valid UTF-8 become U+FFFD.
    public func decode(_ tokens: [Int]) -> String { String(decoding: decodeBytes(tokens), as: UTF8.self) }

    public func serialized() -> String {
        let object: [String: Any] = ["kind": kind, "merges": merges.map { [$0.left, $0.right] }]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: Pieces shared by training and encoding

    static func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    /// Replaces every non-overlapping occurrence of `pair`, left to right, by `id`.
    static func merge(_ ids: [Int], _ pair: (left: Int, right: Int), into id: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(ids.count)
        var i = 0
        while i < ids.count {
            if i + 1 < ids.count && ids[i] == pair.left && ids[i + 1] == pair.right {
                out.append(id); i += 2
            } else {
                out.append(ids[i]); i += 1
            }
        }
        return out
    }

    private enum ByteClass { case letter, digit, punctuation, space }

    private static func byteClass(_ b: UInt8) -> ByteClass {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), 0x80...0xFF: return .letter
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return .digit
        case 0x09...0x0D, 0x20: return .space
        default: return .punctuation
        }
    }

    /// The longest chunk, in bytes: longer runs are cut into pieces this long
    /// (the last one shorter). See the file's comment for why.
    static let maxChunk = 64

    /// The chunks of `bytes`, in order, covering every byte exactly once:
    /// " ?letters+", " ?digits+", " ?punctuation+", or whitespace+ (leaving the
    /// last space of a run to the word that follows it), none longer than `maxChunk`.
    static func chunks(_ bytes: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        let n = bytes.count
        var i = 0
        while i < n {
            let start = i
            if bytes[i] == 0x20, i + 1 < n, byteClass(bytes[i + 1]) != .space { i += 1 }   // " word"
            let c = byteClass(bytes[i])
            if c == .space {
                while i < n && byteClass(bytes[i]) == .space { i += 1 }
                // "   word": the run is "  " and " word" takes the last space.
                if i < n && i - start > 1 && bytes[i - 1] == 0x20 { i -= 1 }
            } else {
                while i < n && byteClass(bytes[i]) == c { i += 1 }
            }
            // A run past the cap becomes pieces of `maxChunk` bytes.
            var piece = start
            while i - piece > maxChunk {
                out.append(piece..<(piece + maxChunk))
                piece += maxChunk
            }
            out.append(piece..<i)
        }
        return out
    }

    // MARK: Training

    static func train(_ bytes: [UInt8], vocabularySize: Int) -> [(left: Int, right: Int)] {
        // Distinct chunks with their frequencies.
        var index: [ArraySlice<UInt8>: Int] = [:]
        var words: [[Int]] = []
        var frequency: [Int] = []
        for range in chunks(bytes) {
            let chunk = bytes[range]
            if let w = index[chunk] { frequency[w] += 1; continue }
            index[chunk] = words.count
            words.append(chunk.map(Int.init))
            frequency.append(1)
        }
        // Pair counts over the corpus, and the chunks each pair occurs in.
        var counts: [UInt64: Int] = [:]
        var containing: [UInt64: [Int]] = [:]
        for (w, word) in words.enumerated() where word.count >= 2 {
            for i in 0..<(word.count - 1) {
                let k = key(word[i], word[i + 1])
                counts[k, default: 0] += frequency[w]
                containing[k, default: []].append(w)
            }
        }
        var heap = PairHeap()
        for (k, c) in counts { heap.push(count: c, key: k) }

        var merges: [(left: Int, right: Int)] = []
        while 256 + merges.count < vocabularySize, let top = heap.pop() {
            guard counts[top.key] == top.count else { continue }   // stale: the count changed since the push
            if top.count < 2 { break }
            let pair = (left: Int(top.key >> 32), right: Int(top.key & 0xFFFF_FFFF))
            let id = 256 + merges.count
            merges.append(pair)
            var delta: [UInt64: Int] = [:]
            for w in Set(containing.removeValue(forKey: top.key) ?? []).sorted() {
                let old = words[w]
                // Where the pair is replaced: left to right, without overlaps, as `merge` does.
                var starts: [Int] = []
                var i = 0
                while i + 1 < old.count {
                    if old[i] == pair.left && old[i + 1] == pair.right { starts.append(i); i += 2 } else { i += 1 }
                }
                if starts.isEmpty { continue }   // listed, but the pair was merged away already
                let new = merge(old, pair, into: id)
                let f = frequency[w]
                // Only the pairs that touch a replacement change: old pairs p−1, p, p+1
                // around each start p go, new pairs with the new id come. The rest of
                // the chunk is untouched, so a merge costs its occurrences, not the
                // chunk's length (the same counts as recounting the whole chunk).
                var last = -1   // the last old pair subtracted, so none goes twice
                for p in starts {
                    for j in max(p - 1, last + 1)...min(p + 1, old.count - 2) where j >= 0 {
                        delta[key(old[j], old[j + 1]), default: 0] -= f
                        last = j
                    }
                }
                for q in 0..<max(new.count - 1, 0) where new[q] == id || new[q + 1] == id {
                    let k = key(new[q], new[q + 1])
                    delta[k, default: 0] += f
                    containing[k, default: []].append(w)   // pairs without the new id were listed already
                }
                words[w] = new
            }
            for (k, d) in delta where d != 0 {
                let c = counts[k, default: 0] + d
                if c > 0 { counts[k] = c; heap.push(count: c, key: k) } else { counts[k] = nil }
            }
        }
        return merges
    }

    /// A binary max-heap of (count, pair key); ties pop the smaller key first.
    struct PairHeap {
        private var items: [(count: Int, key: UInt64)] = []

        private static func above(_ a: (count: Int, key: UInt64), _ b: (count: Int, key: UInt64)) -> Bool {
            a.count > b.count || (a.count == b.count && a.key < b.key)
        }

        mutating func push(count: Int, key: UInt64) {
            items.append((count, key))
            var i = items.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard Self.above(items[i], items[parent]) else { break }
                items.swapAt(i, parent)
                i = parent
            }
        }

        mutating func pop() -> (count: Int, key: UInt64)? {
            guard let top = items.first else { return nil }
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var best = i
                    if l < items.count && Self.above(items[l], items[best]) { best = l }
                    if r < items.count && Self.above(items[r], items[best]) { best = r }
                    if best == i { break }
                    items.swapAt(i, best)
                    i = best
                }
            }
            return top
        }
    }
}
