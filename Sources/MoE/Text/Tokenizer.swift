// Tokenizer: text in, integers out, and back.
//
// A language model predicts integers from 0..<V. A tokenizer fixes what the
// integers stand for. Two kinds here (Notebooks/part4-gpt.md, §7):
//
//   * `CharTokenizer`: one token per Unicode scalar seen in the corpus. Tiny
//     Shakespeare has 65; the loss is then in nats per character, which is
//     what the ≤ 2.0 target is stated in.
//   * `BPETokenizer`: byte-level byte-pair encoding trained on the corpus. It
//     starts from the 256 byte values (so any input can be encoded) and merges
//     the most frequent adjacent pair into a new token until V is reached.
//     Fewer, longer tokens: a window of T tokens covers more text.
//
// Both are saved as a small JSON object (`serialized`) beside the checkpoint
// and inside its metadata, so `gpt-moe sample` needs nothing but the checkpoint.
import Foundation

/// Maps text to token ids in 0..<vocabularySize and back.
public protocol Tokenizer {
    /// "char" or "bpe", as in `--tokenizer`.
    var kind: String { get }
    /// V: every id `encode` returns is in 0..<V.
    var vocabularySize: Int { get }
    func encode(_ text: String) -> [Int]
    /// The text of `tokens`. Ids outside 0..<V are a programming error.
    func decode(_ tokens: [Int]) -> String
    /// A JSON object that `TokenizerFile.decode` turns back into an equal tokenizer.
    func serialized() -> String
}

/// Reading a saved tokenizer.
public enum TokenizerFile {
    /// A tokenizer from the JSON text of `serialized()`. `source` names the file in errors;
    /// `expectedVocabularySize` (a model's) is compared before anything is built.
    public static func decode(_ text: String, source: String, expectedVocabularySize: Int? = nil) throws -> Tokenizer {
        func fail(_ problem: String) -> Error { TextError(file: source, problem: problem) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let kind = object["kind"] as? String else {
            throw fail("not a tokenizer (expected a JSON object with a \"kind\")")
        }
        switch kind {
        case "char":
            guard let symbols = object["symbols"] as? [String] else { throw fail("char tokenizer without \"symbols\"") }
            var scalars: [Unicode.Scalar] = []
            for s in symbols {
                guard s.unicodeScalars.count == 1 else { throw fail("char tokenizer symbol '\(s)' is not one Unicode scalar") }
                scalars.append(s.unicodeScalars.first!)
            }
            if let v = expectedVocabularySize, v != scalars.count + 1 {
                throw fail("char tokenizer has \(scalars.count + 1) tokens (\(scalars.count) symbols + unknown), the model \(v)")
            }
            return try CharTokenizer(symbols: scalars, source: source)
        case "bpe":
            guard let pairs = object["merges"] as? [[Int]] else { throw fail("bpe tokenizer without \"merges\"") }
            return try BPETokenizer(merges: pairs, source: source, expectedVocabularySize: expectedVocabularySize)
        default:
            throw fail("unknown tokenizer kind '\(kind)' (expected char or bpe)")
        }
    }
}

/// A problem with a text or tokenizer file: one line naming the file.
public struct TextError: Error, CustomStringConvertible, LocalizedError {
    public var file: String
    public var problem: String
    public init(file: String, problem: String) { self.file = file; self.problem = problem }
    public var description: String { "\(file): \(problem)" }
    public var errorDescription: String? { description }
}
