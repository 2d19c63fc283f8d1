// Usage errors (ArgumentReader.swift): one line, and a guess for a near miss.
import XCTest
@testable import MoE

final class ArgumentReaderTests: XCTestCase {
    func testNearMissesAreGuessedAndFarOnesAreNot() {
        let known = ["--epochs", "--experts", "--expert-hidden", "--train-size", "--lr", "--help"]
        XCTAssertEqual(nearMiss("--epoch", in: known), "--epochs")          // a letter missing
        XCTAssertEqual(nearMiss("--epcohs", in: known), "--epochs")         // two swapped
        XCTAssertEqual(nearMiss("--trainsize", in: known), "--train-size")
        XCTAssertEqual(nearMiss("--expert", in: known), "--experts")
        XCTAssertNil(nearMiss("--bogus", in: known), "not a typo of anything")
        XCTAssertNil(nearMiss("--l", in: known), "too short to guess from")
        XCTAssertNil(nearMiss("--epochs", in: known), "a known word is no near miss")
        XCTAssertEqual("\(UsageError.unknownOption("epochs", known: known))", "unknown option 'epochs'; did you mean --epochs?")
        XCTAssertEqual("\(UsageError.unknownOption("--bogus", known: known))", "unknown option '--bogus'")
        XCTAssertEqual(UsageError.line(program: "mnist-moe", UsageError("x")), "mnist-moe: x (mnist-moe --help lists every option)")
    }

    func testTheFlagsOfAUsageText() {
        let usage = """
          --epochs N         passes (default 30); --no-shuffle keeps the order
          -h, --help         this text ($MNIST_DIR, --data-dir)
        """
        XCTAssertEqual(flags(inUsage: usage), ["--epochs", "--no-shuffle", "--help", "--data-dir"])
    }

    /// `double` (capacity factors) refuses what `float` refuses: text that is no number,
    /// NaN and infinities, values outside the range, a missing value; and keeps the decimal.
    func testADoubleValueRefusesBrokenInputAndKeepsTheDecimal() throws {
        for bad in [["--capacity", "abc"], ["--capacity", "nan"], ["--capacity", "inf"], ["--capacity", "-1"],
                    ["--capacity", "1e9"], ["--capacity", ""], ["--capacity"]] {
            var args = ArgumentReader(bad)
            _ = args.next()
            XCTAssertThrowsError(try args.double("--capacity", 0.01...1000), "\(bad)") { error in
                XCTAssertTrue("\(error)".contains("--capacity"), "the error names the flag: \(error)")
            }
        }
        var args = ArgumentReader(["--capacity", "0.1"])
        _ = args.next()
        XCTAssertEqual(try args.double("--capacity", 0.01...1000), 0.1)   // not 0.10000000149
    }
}

/// moe-bench's usage errors, without running a benchmark.
final class BenchCommandLineTests: CommandLineTestCase {
    override class var program: String { "moe-bench" }

    func testUsageErrorsAreOneLineWithAGuess() throws {
        for (arguments, says) in [(["--jsn"], "did you mean --json?"), (["--only", "gemm"], "--only must be matmul, step or pretrained"),
                                  (["--only"], "--only needs a value")] {
            let outcome = try run(arguments)
            XCTAssertEqual(outcome.status, 2, outcome.summary)
            XCTAssertEqual(outcome.stdout, "", "nothing benchmarked")
            XCTAssertEqual(outcome.errorLines.count, 1, outcome.stderr)
            XCTAssertTrue(outcome.stderr.hasPrefix("moe-bench: ") && outcome.stderr.contains(says), outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains("(moe-bench --help lists every option)"), outcome.stderr)
        }
    }
}
