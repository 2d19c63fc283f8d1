// HubTokenizer: a Hugging Face `tokenizer.json`, for the two kinds of BPE these models use.
//
// The toy's BPETokenizer (Text/BPETokenizer.swift) learns merges on bytes and
// replays them. A pretrained model comes with its merges fixed, in the
// `tokenizers` library's JSON format, as a pipeline:
//
//     text ─▶ added tokens split out ─▶ normalizer ─▶ pre-tokenizer ─▶ BPE model ─▶ post-processor ─▶ ids
//     ids  ─▶ tokens ─▶ decoder ─▶ text
//
// Two kinds, which between them cover every model `pretrained-moe` runs
// (Notebooks/part5-pretrained.md, §7):
//
//   * byte-level BPE (GPT-2; OLMoE/GPT-NeoX, Granite, Qwen). The pre-tokenizer
//     cuts the text into words with a regular expression (GPT-2's, or Qwen's
//     own through a `Split`; Granite first splits off every digit) and maps each
//     UTF-8 byte of a word to a printable character (bytes_to_unicode: the 188
//     printable Latin-1 bytes stand for themselves, the other 68 are moved to
//     U+0100…). BPE then merges those characters; the decoder maps them back
//     to bytes. Every byte has a token, so nothing is unknown.
//   * metaspace BPE with byte fallback (Llama/Mistral/Mixtral). Spaces become
//     "▁" (U+2581), one is prepended, and BPE merges Unicode characters. A
//     character that is not in the vocabulary is spelled as its UTF-8 bytes,
//     with the tokens <0x00>…<0xFF>. The decoder turns "▁" back into spaces,
//     joins byte tokens into characters and drops the prepended space.
//
// The BPE step is the same for both: start from single characters and, while
// some adjacent pair is in the merge list, merge the pair of lowest rank
// (leftmost first among equals). Added tokens (<s>, <|endoftext|>) are matched
// in the raw text before anything else and never split.
//
// Anything else in a tokenizer.json (WordPiece, Unigram, other normalizers…)
// is refused with a one-line error naming the field.
import Foundation

public final class HubTokenizer {
    enum Kind { case byteLevel, metaspace }
    /// One step of pre-tokenisation, applied to every piece in turn.
    enum PreStep {
        case regex(NSRegularExpression)   // keep the matches and the text between them as pieces
        case digits(individual: Bool)     // split off digits (each on its own, or runs)
        case metaspace(prependAlways: Bool, split: Bool)
    }

    let kind: Kind
    let vocabulary: [String: Int]         // token → id, the BPE model's own (added tokens are not in it)
    let tokens: [String]                  // id → token  [V]
    let ranks: [String: Int]              // "left right" → merge rank
    let added: [(content: String, id: Int)]   // longest first
    let addedIDs: Set<Int>
    let preSteps: [PreStep]
    let normalizePrepend: String?         // metaspace normalizer: Prepend
    let normalizeReplace: (String, String)?
    let normalizeNFC: Bool
    let byteFallback: Bool
    let unknownID: Int?
    let prefixTokens: [Int]               // TemplateProcessing: ids before $A
    let suffixTokens: [Int]               // … and after
    let addPrefixSpace: Bool              // ByteLevel pre-tokenizer's add_prefix_space
    let stripLeading: Int                 // metaspace decoder: Strip(start)
    let decodeByteFallback: Bool          // metaspace decoder: ByteFallback

    public var vocabularySize: Int { tokens.count }

    /// Reads `tokenizer.json` in `directory`.
    public static func load(directory: URL) throws -> HubTokenizer {
        let url = directory.appendingPathComponent("tokenizer.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw PretrainedError(file: url.path, problem: "no such file (a checkpoint folder needs tokenizer.json)")
        }
        return try HubTokenizer(json: data, source: url.path)
    }

    public init(json data: Data, source: String) throws {
        func fail(_ problem: String) -> PretrainedError { PretrainedError(file: source, problem: problem) }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let model = root["model"] as? [String: Any] else { throw fail("field 'model' is missing") }
        let type = model["type"] as? String ?? "BPE"
        if model["ignore_merges"] as? Bool == true {
            throw fail("field 'model.ignore_merges' is true (Llama 3 style); only classic BPE is supported")
        }
        guard type == "BPE" else { throw fail("field 'model.type' is '\(type)'; only BPE tokenizers are supported") }
        guard let vocab = model["vocab"] as? [String: Any] else { throw fail("field 'model.vocab' is not an object") }
        var vocabulary: [String: Int] = [:]
        for (token, value) in vocab {
            guard let id = (value as? NSNumber)?.intValue, id >= 0, id < 10_000_000 else { throw fail("model.vocab '\(token)' has no valid id") }
            vocabulary[token] = id
        }
        var added: [(String, Int)] = []
        for item in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = item["content"] as? String, let id = (item["id"] as? NSNumber)?.intValue, id >= 0, id < 10_000_000 else {
                throw fail("an entry of 'added_tokens' lacks content or id")
            }
            added.append((content, id))
        }
        let size = max(vocabulary.values.max() ?? -1, added.map(\.1).max() ?? -1) + 1
        var tokens = [String](repeating: "", count: size)
        for (token, id) in vocabulary { tokens[id] = token }
        for (content, id) in added { tokens[id] = content }
        var ranks: [String: Int] = [:]
        for (rank, merge) in (model["merges"] as? [Any] ?? []).enumerated() {
            let pair: [String]
            if let text = merge as? String { pair = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init) }
            else if let list = merge as? [String] { pair = list } else { pair = [] }
            guard pair.count == 2 else { throw fail("model.merges entry \(rank) is not a pair") }
            let key = pair[0] + " " + pair[1]
            if ranks[key] == nil { ranks[key] = rank }
        }
        self.vocabulary = vocabulary
        self.tokens = tokens
        self.ranks = ranks
        self.added = added.filter { !$0.0.isEmpty }.sorted { $0.0.utf8.count > $1.0.utf8.count }
        addedIDs = Set(added.map(\.1))
        byteFallback = model["byte_fallback"] as? Bool ?? false
        unknownID = (model["unk_token"] as? String).flatMap { vocabulary[$0] }

        // Normalizer: none, or Llama's Prepend("▁") + Replace(" ", "▁").
        var prepend: String?, replace: (String, String)?, nfc = false
        func normalizer(_ n: [String: Any]) throws {
            switch n["type"] as? String {
            case "Sequence": for inner in n["normalizers"] as? [[String: Any]] ?? [] { try normalizer(inner) }
            case "Prepend": prepend = n["prepend"] as? String
            case "Replace":
                guard let from = (n["pattern"] as? [String: Any])?["String"] as? String, let to = n["content"] as? String else {
                    throw fail("field 'normalizer': only Replace with a plain String pattern is supported")
                }
                replace = (from, to)
            case "NFC": nfc = true     // Qwen's: compose characters (e + ◌́ → é) before splitting
            default: throw fail("field 'normalizer' has type '\(n["type"] as? String ?? "?")'; supported: Sequence, Prepend, Replace, NFC")
            }
        }
        if let n = root["normalizer"] as? [String: Any] { try normalizer(n) }
        normalizePrepend = prepend
        normalizeReplace = replace
        normalizeNFC = nfc

        // Pre-tokenizer.
        var steps: [PreStep] = [], byteLevel = false, prefixSpace = false
        func preTokenizer(_ p: [String: Any]) throws {
            switch p["type"] as? String {
            case "Sequence": for inner in p["pretokenizers"] as? [[String: Any]] ?? [] { try preTokenizer(inner) }
            case "ByteLevel":
                byteLevel = true
                prefixSpace = p["add_prefix_space"] as? Bool ?? false
                if p["use_regex"] as? Bool ?? true { steps.append(.regex(try HubTokenizer.regex(HubTokenizer.gpt2Pattern, source))) }
            case "Split":
                guard let pattern = p["pattern"] as? [String: Any] else { throw fail("field 'pre_tokenizer': Split without a pattern") }
                let behavior = (p["behavior"] as? String ?? "Isolated").lowercased()
                guard behavior == "isolated", !(p["invert"] as? Bool ?? false) else {
                    throw fail("field 'pre_tokenizer': only Split with behavior Isolated is supported, not \(behavior)")
                }
                if let text = pattern["Regex"] as? String { steps.append(.regex(try HubTokenizer.regex(text, source))) }
                else if let text = pattern["String"] as? String {
                    steps.append(.regex(try HubTokenizer.regex(NSRegularExpression.escapedPattern(for: text), source)))
                } else { throw fail("field 'pre_tokenizer': Split pattern is neither Regex nor String") }
            case "Digits": steps.append(.digits(individual: p["individual_digits"] as? Bool ?? false))
            case "Metaspace":
                let scheme = p["prepend_scheme"] as? String ?? ((p["add_prefix_space"] as? Bool ?? true) ? "always" : "never")
                guard scheme == "always" || scheme == "first" || scheme == "never" else { throw fail("field 'pre_tokenizer': Metaspace prepend_scheme '\(scheme)'") }
                steps.append(.metaspace(prependAlways: scheme != "never", split: p["split"] as? Bool ?? true))
            default: throw fail("field 'pre_tokenizer' has type '\(p["type"] as? String ?? "?")'; supported: ByteLevel, Split, Digits, Metaspace, Sequence")
            }
        }
        if let p = root["pre_tokenizer"] as? [String: Any] { try preTokenizer(p) }
        preSteps = steps
        addPrefixSpace = prefixSpace
        let metaspaceLike = prepend != nil || steps.contains { if case .metaspace = $0 { return true } else { return false } }
        guard byteLevel != metaspaceLike else {
            throw fail(byteLevel ? "mixes a ByteLevel pre-tokenizer with metaspace normalisation"
                       : "is neither byte-level BPE (a ByteLevel pre-tokenizer) nor metaspace BPE (Prepend ▁ or Metaspace); unsupported tokenizer kind")
        }
        kind = byteLevel ? .byteLevel : .metaspace

        // Post-processor: TemplateProcessing adds BOS/EOS around the text; ByteLevel adds nothing.
        var before: [Int] = [], after: [Int] = []
        if let post = root["post_processor"] as? [String: Any] {
            switch post["type"] as? String {
            case "TemplateProcessing":
                let specials = post["special_tokens"] as? [String: [String: Any]] ?? [:]
                var seenSequence = false
                for piece in post["single"] as? [[String: Any]] ?? [] {
                    if piece["Sequence"] != nil { seenSequence = true; continue }
                    guard let name = (piece["SpecialToken"] as? [String: Any])?["id"] as? String,
                          let ids = specials[name]?["ids"] as? [NSNumber] else { throw fail("field 'post_processor': a template token has no ids") }
                    if seenSequence { after += ids.map(\.intValue) } else { before += ids.map(\.intValue) }
                }
            case "ByteLevel", nil: break
            case let other?: throw fail("field 'post_processor' has type '\(other)'; supported: TemplateProcessing, ByteLevel")
            }
        }
        prefixTokens = before
        suffixTokens = after

        // Decoder, for metaspace: how many leading spaces Strip removes, and whether
        // ByteFallback joins <0xXX> tokens (a lone Metaspace decoder leaves them as text).
        var strip = 0, joinBytes = false
        if kind == .metaspace, let dec = root["decoder"] as? [String: Any] {
            for d in (dec["type"] as? String == "Sequence" ? dec["decoders"] as? [[String: Any]] ?? [] : [dec]) {
                switch d["type"] as? String {
                case "Strip": strip = (d["start"] as? NSNumber)?.intValue ?? 0
                case "ByteFallback": joinBytes = true
                case "Metaspace": strip = (d["prepend_scheme"] as? String ?? "always") == "never" ? 0 : 1
                default: break
                }
            }
        }
        stripLeading = strip
        decodeByteFallback = joinBytes
        for id in before + after where id >= size { throw fail("field 'post_processor' names id \(id), outside the vocabulary") }
    }

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    static func regex(_ pattern: String, _ source: String) throws -> NSRegularExpression {
        do { return try NSRegularExpression(pattern: pattern) }
        catch { throw PretrainedError(file: source, problem: "field 'pre_tokenizer': the regular expression does not compile") }
    }

    // MARK: Encoding

    /// The ids of `text`, with the post-processor's special tokens (as `tokenizer.encode(text)` does).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = addSpecialTokens ? prefixTokens : []
        for (segment, addedID) in splitAddedTokens(text) {
            if let addedID { ids.append(addedID); continue }
            for word in preTokenize(normalize(segment)) { ids += bpe(word) }
        }
        if addSpecialTokens { ids += suffixTokens }
        return ids
    }

    /// Cuts out added tokens, leftmost and longest first.   → (text, nil) or ("", id)
    func splitAddedTokens(_ text: String) -> [(String, Int?)] {
        guard !added.isEmpty else { return [(text, nil)] }
        var out: [(String, Int?)] = []
        var rest = Substring(text)
        var pending = ""
        while !rest.isEmpty {
            if let hit = added.first(where: { rest.hasPrefix($0.content) && !$0.content.isEmpty }) {
                if !pending.isEmpty { out.append((pending, nil)); pending = "" }
                out.append(("", hit.id))
                rest = rest.dropFirst(hit.content.count)
            } else {
                pending.append(rest.removeFirst())
            }
        }
        if !pending.isEmpty { out.append((pending, nil)) }
        return out
    }

    func normalize(_ text: String) -> String {
        guard !text.isEmpty else { return text }
        var t = normalizeNFC ? text.precomposedStringWithCanonicalMapping : text
        if let p = normalizePrepend { t = p + t }
        if let (from, to) = normalizeReplace { t = t.replacingOccurrences(of: from, with: to) }
        return t
    }

    /// The words BPE sees, each already in the model's alphabet (byte characters for byte-level).
    func preTokenize(_ text: String) -> [String] {
        var pieces = [text]
        if kind == .byteLevel && addPrefixSpace && !(text.first?.isWhitespace ?? true) { pieces = [" " + text] }
        for step in preSteps {
            var next: [String] = []
            for piece in pieces where !piece.isEmpty {
                switch step {
                case .regex(let re): next += HubTokenizer.splitIsolated(piece, re)
                case .digits(let individual): next += HubTokenizer.splitDigits(piece, individual: individual)
                case .metaspace(let prepend, let split):
                    var t = piece.replacingOccurrences(of: " ", with: "▁")
                    if prepend && !t.hasPrefix("▁") && next.isEmpty { t = "▁" + t }
                    next += split ? HubTokenizer.splitBeforeMetaspace(t) : [t]
                }
            }
            pieces = next
        }
        if kind == .byteLevel { return pieces.map { String(String.UnicodeScalarView($0.utf8.map { HubTokenizer.byteToScalar[Int($0)] })) } }
        return pieces
    }

    /// Matches of `re` and the text between them, in order (tokenizers' "Isolated").
    static func splitIsolated(_ text: String, _ re: NSRegularExpression) -> [String] {
        let ns = text as NSString
        var out: [String] = [], last = 0
        for m in re.matches(in: text, range: NSRange(location: 0, length: ns.length)) where m.range.length > 0 {
            if m.range.location > last { out.append(ns.substring(with: NSRange(location: last, length: m.range.location - last))) }
            out.append(ns.substring(with: m.range))
            last = m.range.location + m.range.length
        }
        if last < ns.length { out.append(ns.substring(from: last)) }
        return out
    }

    static func splitDigits(_ text: String, individual: Bool) -> [String] {
        var out: [String] = [], current = "", currentIsDigit = false
        for ch in text {
            let isDigit = ch.unicodeScalars.count == 1 && ch.unicodeScalars.first!.properties.numericType != nil
            if !current.isEmpty && (isDigit != currentIsDigit || (isDigit && individual)) { out.append(current); current = "" }
            current.append(ch); currentIsDigit = isDigit
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// "▁a▁b" → ["▁a", "▁b"]: each ▁ starts a new piece (tokenizers' MergedWithNext).
    static func splitBeforeMetaspace(_ text: String) -> [String] {
        var out: [String] = [], current = ""
        for ch in text {
            if ch == "▁" && !current.isEmpty { out.append(current); current = "" }
            current.append(ch)
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// Byte-pair merges of one word, lowest rank first.
    /// (No shortcut for a word that is itself in the vocabulary: the `tokenizers`
    /// library replays the merges unless `ignore_merges` is set, and the two can differ.)
    func bpe(_ word: String) -> [Int] {
        var symbols = word.unicodeScalars.map { String($0) }
        while symbols.count > 1 {
            var best = -1, bestRank = Int.max
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < bestRank { best = i; bestRank = r }
            }
            if best < 0 { break }
            symbols[best] += symbols[best + 1]
            symbols.remove(at: best + 1)
        }
        var ids: [Int] = []
        for s in symbols {
            if let id = vocabulary[s] { ids.append(id); continue }
            if byteFallback {
                let bytes = s.utf8.compactMap { vocabulary[String(format: "<0x%02X>", $0)] }
                if bytes.count == s.utf8.count { ids += bytes; continue }
            }
            if let unk = unknownID {
                if ids.last == unk { continue }   // fuse_unk: one <unk> per run
                ids.append(unk)
            }
        }
        return ids
    }

    // MARK: Decoding

    /// The text of `ids` (special tokens included, as `decode(ids, skip_special_tokens=False)`).
    public func decode(_ ids: [Int]) -> String {
        switch kind {
        case .byteLevel:
            var bytes: [UInt8] = []
            for id in ids where id >= 0 && id < tokens.count {
                for scalar in tokens[id].unicodeScalars {
                    if let b = HubTokenizer.scalarToByte[scalar] { bytes.append(b) } else { bytes += Array(String(scalar).utf8) }
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        case .metaspace:
            // Replace ▁ → " ", join runs of <0xXX> into characters, fuse, strip the leading space.
            var text = "", pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) { text += s }
                else { text += String(repeating: "\u{FFFD}", count: pending.count) }
                pending = []
            }
            for id in ids where id >= 0 && id < tokens.count {
                let token = tokens[id]
                if decodeByteFallback, token.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">"), let b = UInt8(token.dropFirst(3).prefix(2), radix: 16) {
                    pending.append(b); continue
                }
                flush()
                text += token.replacingOccurrences(of: "▁", with: " ")
            }
            flush()
            var stripped = Substring(text)
            for _ in 0..<stripLeading where stripped.first == " " { stripped = stripped.dropFirst() }
            return String(stripped)
        }
    }

    /// For streaming: the text of `ids` past the first `printedCount` scalars
    /// already shown, and the new count. Start with decode(prompt)'s count.
    public func decodeIncrement(_ ids: [Int], printedCount: inout Int) -> String {
        let text = decode(ids)
        // Hold back an unfinished UTF-8 character (shown as U+FFFD at the end) until it completes.
        if text.hasSuffix("\u{FFFD}") { return "" }
        let scalars = Array(text.unicodeScalars)
        guard scalars.count > printedCount else { return "" }
        let piece = String(String.UnicodeScalarView(scalars[printedCount...]))
        printedCount = scalars.count
        return piece
    }

    // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable { table[b] = Unicode.Scalar(UInt32(b))! } else { table[b] = Unicode.Scalar(next)!; next += 1 }
        }
        return table
    }()
    static let scalarToByte: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s] = UInt8(b) }
        return map
    }()
}
