// TextCorpus: reading the training text, and fetching Tiny Shakespeare.
//
// Any UTF-8 text file will do (`gpt-moe --text FILE`). Bytes that are not
// valid UTF-8 are replaced by U+FFFD "�" when the file is decoded, so a stray
// Latin-1 byte costs one "�" token instead of the whole run; the count of
// replacements is reported so it is not silent.
//
// The default corpus is Tiny Shakespeare (Karpathy's char-rnn data set: 40,000
// lines of the plays, 1,115,394 bytes, 65 distinct characters), downloaded
// when missing as mnist-moe downloads MNIST: the bytes are checked before
// they are written, and written atomically (AtomicFile), so a failed or
// truncated download never leaves a half file behind.
//
// Text, tokenizers, windows and the split: Notebooks/part4-gpt.md, §7.
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

public enum TextCorpus {
    /// The file decoded as UTF-8, and how many invalid byte sequences became U+FFFD.
    /// - Throws: `TextError` naming the file when it is missing, unreadable or empty.
    public static func load(_ url: URL) throws -> (text: String, replacements: Int) {
        let data: Data
        do { data = try InputFile.read(url) } catch let e as InputFileError {
            throw TextError(file: url.path, problem: e.problem)
        }
        guard !data.isEmpty else { throw TextError(file: url.path, problem: "is empty") }
        let text = String(decoding: data, as: UTF8.self)
        // Replacements made by decoding = U+FFFD in the text − U+FFFD already in the file (bytes EF BF BD).
        let decoded = text.unicodeScalars.reduce(0) { $0 + ($1 == "\u{FFFD}" ? 1 : 0) }
        let bytes = [UInt8](data)
        var literal = 0, i = 0
        while i + 2 < bytes.count {
            if bytes[i] == 0xEF && bytes[i + 1] == 0xBF && bytes[i + 2] == 0xBD { literal += 1; i += 3 } else { i += 1 }
        }
        return (text, decoded - literal)
    }
}

extension TextCorpus {
    /// The text cut into a training part and the last `validationFraction` of its
    /// Unicode scalars. Splitting the *text* (not the tokens) lets a tokenizer be
    /// trained on the training part alone, so nothing about the held-out text
    /// leaks into the vocabulary.
    public static func split(_ text: String, validationFraction: Double) -> (train: String, validation: String) {
        let scalars = text.unicodeScalars
        let held = Int((Double(scalars.count) * validationFraction).rounded())
        let cut = scalars.index(scalars.endIndex, offsetBy: -held)
        return (String(scalars[..<cut]), String(scalars[cut...]))
    }
}

public enum TinyShakespeare {
    /// Where the data set lives: Andrej Karpathy's char-rnn repository.
    public static let sourceURL = URL(string: "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")!
    /// Where `gpt-moe` looks for it and downloads it to, relative to the working directory.
    public static let defaultPath = "data/tinyshakespeare/input.txt"
    /// Its size in bytes; a download of any other size is rejected.
    public static let byteCount = 1_115_394

    /// Downloads the file to `url` (folders created). `progress(received, expected)`
    /// is called from a background thread as bytes arrive. `source` is for tests.
    /// - Throws: `TextError` naming the source and the problem.
    public static func download(to url: URL, from source: URL = sourceURL, timeout: TimeInterval = 30,
                                progress: @escaping (Int, Int?) -> Void = { _, _ in }) throws {
        let bytes: [UInt8]
        do { bytes = try MNISTDownload.fetch(source, timeout: timeout, progress: progress) } catch {
            throw TextError(file: source.absoluteString,
                            problem: "download failed (\(error)); fetch it by hand and put it at \(url.path), or pass --text FILE")
        }
        // The file never changes: anything of another size, or not starting as the play
        // starts, is an error page or a truncated transfer, and is not written.
        guard bytes.count == byteCount, bytes.starts(with: Array("First Citizen:".utf8)) else {
            throw TextError(file: source.absoluteString,
                            problem: "download rejected: \(bytes.count) bytes, not the \(byteCount) of Tiny Shakespeare")
        }
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw TextError(file: url.deletingLastPathComponent().path, problem: "cannot create folder: \(error.localizedDescription)")
        }
        try AtomicFile.write(Data(bytes), to: url)
    }
}
