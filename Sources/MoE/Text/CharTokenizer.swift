// CharTokenizer: one token per character (Unicode scalar) of the corpus.
//
// The vocabulary is the set of scalars the training text contains, sorted by
// code point, so the same text always gives the same ids: "\n" → 0, " " → 1,
// "!" → 2, … for Tiny Shakespeare (65 symbols). One extra id, the last, stands
// for any scalar the corpus did not contain and decodes to U+FFFD "�", the
// replacement character; so encoding never fails, and decode(encode(s)) == s
// exactly when every scalar of s was in the corpus.
//
// Unicode scalars, not Swift `Character`s: "é" written as e + combining accent
// is two scalars and two tokens, and the round trip keeps them as they were.
// Bytes that are not valid UTF-8 never reach this type: `TextCorpus` decodes
// the file and replaces them with U+FFFD (Notebooks/part4-gpt.md, §7).

/// Character-level tokenizer over the scalars of a training text.
///
///     let tokenizer = CharTokenizer(training: "hello")   // e h l o + unknown: V = 5
///     tokenizer.encode("hole")                           // [1, 3, 2, 0]
///     tokenizer.decode([1, 3, 2, 0])                     // "hole"
public struct CharTokenizer: Tokenizer, Equatable {
    /// The symbols, id order; id `symbols.count` is "unknown".
    public let symbols: [Unicode.Scalar]
    private let ids: [Unicode.Scalar: Int]
    /// Ids of the ASCII scalars (−1: not in the vocabulary), the common case without hashing.
    private let asciiIds: [Int]

    public var kind: String { "char" }
    public var vocabularySize: Int { symbols.count + 1 }
    /// The id of scalars outside the vocabulary.
    public var unknownId: Int { symbols.count }

    /// The scalars of `text`, deduplicated and sorted by code point.
    /// - Complexity: O(n) for n scalars.
    public init(training text: String) {
        var seen = Set<Unicode.Scalar>()
        for s in text.unicodeScalars { seen.insert(s) }
        self.init(validSymbols: seen.sorted { $0.value < $1.value })
    }

    /// Rebuilds a saved tokenizer; the symbols must be distinct.
    public init(symbols: [Unicode.Scalar], source: String) throws {
        guard Set(symbols).count == symbols.count else {
            throw TextError(file: source, problem: "char tokenizer lists a symbol twice")
        }
        self.init(validSymbols: symbols)
    }

    private init(validSymbols symbols: [Unicode.Scalar]) {
        self.symbols = symbols
        var ids: [Unicode.Scalar: Int] = [:]
        var ascii = [Int](repeating: -1, count: 128)
        for (i, s) in symbols.enumerated() {
            ids[s] = i
            if s.value < 128 { ascii[Int(s.value)] = i }
        }
        self.ids = ids
        self.asciiIds = ascii
    }

    public static func == (a: CharTokenizer, b: CharTokenizer) -> Bool { a.symbols == b.symbols }

    /// - Complexity: O(n) for n scalars.
    public func encode(_ text: String) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            let id = s.value < 128 ? asciiIds[Int(s.value)] : (ids[s] ?? -1)
            out.append(id >= 0 ? id : unknownId)
        }
        return out
    }

    public func decode(_ tokens: [Int]) -> String {
        var view = String.UnicodeScalarView()
        for t in tokens {
            precondition(t >= 0 && t < vocabularySize, "CharTokenizer.decode: token \(t) outside 0..<\(vocabularySize)")
            view.append(t == unknownId ? "\u{FFFD}" : symbols[t])
        }
        return String(view)
    }

    public func serialized() -> String {
        let object: [String: Any] = ["kind": kind, "symbols": symbols.map { String($0) }]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

import Foundation   // JSONSerialization
