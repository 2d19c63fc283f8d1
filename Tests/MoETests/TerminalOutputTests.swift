// Tests for TextTable and ProgressBar. The progress bar's output and clock are
// injected, so the tests see exactly what would be written and control time.

import XCTest
import MoE

final class TerminalOutputTests: XCTestCase {

    // MARK: Table

    func testTableAlignsWordsLeftAndNumbersRight() {
        var table = TextTable(headers: ["model", "experts", "accuracy", "note"])
        table.addRow(["dense", "1", "97.8%", "baseline"])
        table.addRow(["moe top-2", "16", "98.4%", "×2 params"])
        table.addRow(["moe top-1", "8", "-", ""])
        XCTAssertEqual(table.render(), """
            model      experts  accuracy  note
            ---------  -------  --------  ---------
            dense            1  97.8%     baseline
            moe top-2       16  98.4%     ×2 params
            moe top-1        8  -
            """)
        // "-" is not a number, so the accuracy column above stays left-aligned; without it:
        var numbers = TextTable(headers: ["a", "loss"])
        numbers.addRow(["x", "0.2147"])
        numbers.addRow(["yy", "12.5"])
        numbers.addRow(["zzz", "1e-3"])
        numbers.addRow(["w", "1.2M"])
        numbers.addRow(["v", "203,530"])
        XCTAssertEqual(numbers.render(), """
            a       loss
            ---  -------
            x     0.2147
            yy      12.5
            zzz     1e-3
            w       1.2M
            v    203,530
            """)
    }

    func testTableExplicitAlignmentAndRaggedRows() {
        var table = TextTable(headers: ["n", "name"], alignments: [.left, .right])
        table.addRow(["10"])
        table.addRow(["2", "ab", "extra"])
        XCTAssertEqual(table.render(), """
            n   name
            --  ----  -----
            10
            2     ab  extra
            """)
        XCTAssertEqual(TextTable(headers: []).render(), "\n")
    }

    // MARK: Progress bar

    /// A progress bar writing into an array, with a clock the test advances.
    private final class Harness {
        var written: [String] = []
        var now = 100.0
        /// Wide by default, so these tests see the layout before any fitting (testEveryLineFitsTheWidth fits it).
        func bar(total: Int, isTerminal: Bool, columns: Int = 200) -> ProgressBar {
            ProgressBar(title: "epoch 1", total: total, isTerminal: isTerminal, columns: columns,
                        output: { self.written.append($0) }, clock: { self.now })
        }
    }

    func testPlainModeWritesWholeLinesEveryTenthAndNoCarriageReturns() {
        let harness = Harness()
        let bar = harness.bar(total: 200, isTerminal: false)
        for step in 1...200 {
            harness.now += 0.5
            bar.update(step, status: "loss 0.2147 aux 2.10")
        }
        bar.finish(status: "loss 0.1000")
        let text = harness.written.joined()
        XCTAssertFalse(text.contains("\r"))
        XCTAssertTrue(harness.written.allSatisfy { $0.hasSuffix("\n") && $0.filter { $0 == "\n" }.count == 1 })
        XCTAssertEqual(harness.written.count, 9 + 1)  // 10%, 20%, … 90%, then the final line
        XCTAssertEqual(harness.written[0], "epoch 1: 10% (20/200)  loss 0.2147 aux 2.10  0:10 elapsed\n")
        XCTAssertEqual(harness.written.last, "epoch 1: 200/200 in 1:40  loss 0.1000\n")
    }

    func testTerminalModeRedrawsInPlaceAtMostTwentyTimesASecond() {
        let harness = Harness()
        let bar = harness.bar(total: 1000, isTerminal: true)
        for step in 1...1000 {
            harness.now += 0.001  // 1000 updates within one second
            bar.update(step, status: "loss 0.5")
        }
        // One draw per 0.05 s over one second (about 20), plus the final step.
        XCTAssertLessThanOrEqual(harness.written.count, 22)
        XCTAssertGreaterThanOrEqual(harness.written.count, 19)
        XCTAssertTrue(harness.written.allSatisfy { $0.hasPrefix("\r") && !$0.contains("\n") })
        XCTAssertTrue(harness.written.last!.contains("[########################]  1000/1000  loss 0.5"))
        bar.finish(status: "done")
        bar.finish(status: "again")  // ignored
        XCTAssertEqual(harness.written.last, "\n")
        XCTAssertTrue(harness.written.dropLast().last!.contains("1000/1000  done  0:01"))
    }

    func testTerminalModeErasesTheTailOfALongerLine() {
        let harness = Harness()
        let bar = harness.bar(total: 10, isTerminal: true)
        bar.update(1, status: "a long status message")
        harness.now += 1
        bar.update(2, status: "short")
        let (first, second) = (harness.written[0], harness.written[1])
        XCTAssertEqual(first.count, second.count)  // padded with spaces to cover the old text
        XCTAssertTrue(first.contains("1/10  a long status message  0:00 elapsed, 0:00 left"))
        XCTAssertTrue(second.contains("2/10  short  0:01 elapsed, 0:04 left"))
    }

    func testOddTotalsDoNotCrash() {
        for total in [0, -5, 1] {
            let harness = Harness()
            for isTerminal in [true, false] {
                let bar = harness.bar(total: total, isTerminal: isTerminal)
                bar.update(-3)
                bar.update(7)
                bar.finish()
            }
            XCTAssertFalse(harness.written.isEmpty)
        }
    }

    /// Every line fits the width, in both modes, however long the title and
    /// status: the bar narrows, the estimate goes, then the status is cut.
    func testEveryLineFitsTheWidth() {
        let status = "loss 0.4123 aux 1.234 train 88.10% test 90.12% and a great deal more text than fits"
        for columns in [80, 60, 40] {
            for isTerminal in [true, false] {
                var written: [String] = []
                var now = 0.0
                let bar = ProgressBar(title: "MoE   epoch 12/30", total: 79, isTerminal: isTerminal, columns: columns,
                                      output: { written.append($0) }, clock: { now })
                for step in 1...79 { now += 0.1; bar.update(step, status: step < 40 ? "loss 0.5" : status) }
                bar.finish(status: status)
                for piece in written {
                    for line in piece.split(whereSeparator: { $0 == "\r" || $0 == "\n" }) {
                        XCTAssertLessThan(line.count, columns, "\(columns) columns, terminal \(isTerminal): \(line)")
                    }
                }
                XCTAssertTrue(written.joined().contains("…"), "the long status was cut")
                XCTAssertTrue(written.joined().contains("40/79"), "the count survives the cut while the loop runs")
            }
        }
        // Short enough: nothing is cut, and the full bar is drawn.
        var written: [String] = []
        let bar = ProgressBar(title: "epoch 1", total: 10, isTerminal: true, columns: 80,
                              output: { written.append($0) }, clock: { 0 })
        bar.update(10, status: "loss 0.5")
        XCTAssertTrue(written.last!.contains("[########################]  10/10  loss 0.5"), written.last!)
    }

    func testTheWidthIs80WhenUnknown() {
        // Under `swift test` standard output is a pipe, not a terminal.
        if !ProgressBar.stdoutIsTerminal && ProcessInfo.processInfo.environment["COLUMNS"] == nil {
            XCTAssertEqual(ProgressBar.terminalColumns, 80)
        }
    }

    func testCountedNounsAgreeWithTheirNumber() {
        XCTAssertEqual(counted(1, "epoch"), "1 epoch")
        XCTAssertEqual(counted(30, "epoch"), "30 epochs")
        XCTAssertEqual(counted(0, "step"), "0 steps")
        XCTAssertEqual(counted(2, "index", plural: "indices"), "2 indices")
    }
}
