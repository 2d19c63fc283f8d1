// ArgumentReader: a command line read one flag at a time, with the one-line
// errors this project's programs print ("--epochs must be an integer in
// 0...10000, got 'x'"). mnist-moe, gpt-moe and the shared routing flags
// (RoutingFlags.swift) all read their arguments through it, so a flag's value
// is checked the same way everywhere.
//
//     var args = ArgumentReader(["--epochs", "5"])
//     while let flag = args.next() {
//         switch flag {
//         case "--epochs": epochs = try args.int(flag, 0...10_000)
//         default: throw UsageError("unknown option '\(flag)'")
//         }
//     }

/// A mistake on the command line, as one line that names the flag.
public struct UsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

public struct ArgumentReader {
    private let arguments: [String]
    private var position = 0

    public init(_ arguments: [String]) { self.arguments = arguments }

    /// The next argument (a flag, or a subcommand), or nil at the end.
    public mutating func next() -> String? {
        guard position < arguments.count else { return nil }
        defer { position += 1 }
        return arguments[position]
    }

    /// The value that follows `flag`.
    public mutating func value(_ flag: String) throws -> String {
        guard let v = next() else { throw UsageError("\(flag) needs a value") }
        return v
    }

    /// The value that follows `flag`, which must not be empty: for paths, where
    /// `--out ""` would otherwise mean the current folder and `--init ""` a
    /// confusing error from Foundation.
    public mutating func nonEmptyValue(_ flag: String) throws -> String {
        let v = try value(flag)
        guard !v.isEmpty else { throw UsageError("\(flag) needs a value, got an empty one") }
        return v
    }

    /// The value that follows `flag`, as an integer in `range`.
    public mutating func int(_ flag: String, _ range: ClosedRange<Int>) throws -> Int {
        let text = try value(flag)
        guard let v = Int(text), range.contains(v) else {
            throw UsageError("\(flag) must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return v
    }

    /// The value that follows `flag`, as a finite number in `range`.
    public mutating func float(_ flag: String, _ range: ClosedRange<Float>) throws -> Float {
        let text = try value(flag)
        guard let v = Float(text), v.isFinite, range.contains(v) else {
            throw UsageError("\(flag) must be a number in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return v
    }

    /// The value that follows `flag` as a Double, for factors that feed a
    /// ⌈·⌉: read as a Float and widened, 0.1 becomes 0.10000000149, and
    /// ⌈0.1 · 80 · 2 / 8⌉ would be 3 instead of 2.
    public mutating func double(_ flag: String, _ range: ClosedRange<Float>) throws -> Double {
        let text = try value(flag)
        guard let v = Double(text), v.isFinite, range.contains(Float(v)),
              Double(range.lowerBound) <= v, v <= Double(range.upperBound) else {
            throw UsageError("\(flag) must be a number in \(range.lowerBound)...\(range.upperBound), got '\(text)'")
        }
        return v
    }
}

// MARK: - Near misses

extension UsageError {
    /// "unknown option '--epoch'; did you mean --epochs?" — the suggestion is
    /// the closest of `known` when it is a near miss (see `nearMiss`).
    public static func unknownOption(_ flag: String, known: [String]) -> UsageError {
        var text = "unknown option '\(flag)'"
        if !flag.hasPrefix("-") && known.contains("--" + flag) {
            text += "; did you mean --\(flag)?"
        } else if let guess = nearMiss(flag, in: known) {
            text += "; did you mean \(guess)?"
        }
        return UsageError(text)
    }

    /// The one line a program prints for a usage error: the message and where
    /// the whole usage is (never the whole usage: 60–80 lines bury the message).
    public static func line(program: String, _ error: Error) -> String {
        "\(program): \(error) (\(program) --help lists every option)"
    }
}

/// Every `--flag` a usage text mentions, for `UsageError.unknownOption`: the
/// help text is the list of what a program accepts, so the two cannot drift.
public func flags(inUsage usage: String) -> [String] {
    var found: [String] = [], seen = Set<String>()
    var word = ""
    for ch in usage + " " {
        if ch == "-" || ch.isLetter || ch.isNumber { word.append(ch); continue }
        if word.hasPrefix("--") && word.count > 2 && word.dropFirst(2).first?.isLetter == true && seen.insert(word).inserted {
            found.append(word)
        }
        word = ""
    }
    return found
}

/// The word of `candidates` closest to `word` by edit distance (insertions,
/// deletions, substitutions, each 1), when it is close enough to be a typo:
/// at most 2 edits, and fewer than a third of the word's letters. nil otherwise.
public func nearMiss(_ word: String, in candidates: [String]) -> String? {
    let w = Array(word)
    var best: (String, Int)? = nil
    for candidate in candidates {
        let c = Array(candidate)
        // The classic dynamic programme, one row at a time.
        var previous = Array(0...c.count)
        for i in 1...max(w.count, 1) where !w.isEmpty {
            var row = [i] + [Int](repeating: 0, count: c.count)
            for j in 1..<(c.count + 1) {
                row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (w[i - 1] == c[j - 1] ? 0 : 1))
            }
            previous = row
        }
        let distance = w.isEmpty ? c.count : previous[c.count]
        if best == nil || distance < best!.1 { best = (candidate, distance) }
    }
    guard let (candidate, distance) = best, distance > 0, distance <= 2, 3 * distance < max(w.count, 1) else { return nil }
    return candidate
}
