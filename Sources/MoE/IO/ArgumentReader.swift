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
}
