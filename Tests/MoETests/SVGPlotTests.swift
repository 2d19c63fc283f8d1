// Tests for SVGPlot: every chart, on good and on bad input, must be well-formed
// XML (checked with Foundation's XMLParser) and show the text it was given.

import Foundation
#if canImport(FoundationXML)
import FoundationXML  // XMLParser lives here on Linux
#endif
import XCTest
import MoE

final class SVGPlotTests: XCTestCase {

    /// Collects the text inside each element while parsing.
    /// Internal rather than private, so that Darwin's Objective-C runtime sees the delegate methods.
    final class TextCollector: NSObject, XMLParserDelegate {
        var texts: [String] = []
        var elements: [String] = []
        var attributeValues: [String] = []
        private var current = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
                    qualifiedName: String?, attributes: [String: String] = [:]) {
            elements.append(name)
            attributeValues += attributes.values
            current = ""
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { current += string }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            let trimmed = current.trimmingCharacters(in: .whitespacesAndNewlines)
            if !trimmed.isEmpty { texts.append(trimmed) }
            current = ""
        }
    }

    /// Parses `svg` as XML, failing the test if it is not well-formed; returns texts and element names.
    @discardableResult
    private func parse(_ svg: String, line: UInt = #line) -> (texts: [String], elements: [String]) {
        let parser = XMLParser(data: Data(svg.utf8))
        let collector = TextCollector()
        parser.delegate = collector
        let ok = parser.parse()
        XCTAssertTrue(ok, "not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "?")", line: line)
        XCTAssertEqual(collector.elements.first, "svg", line: line)
        for value in collector.attributeValues {
            XCTAssertFalse(value.lowercased().contains("nan") || value.lowercased().contains("inf"),
                           "non-finite number in an attribute: \(value)", line: line)
        }
        return (collector.texts, collector.elements)
    }

    // MARK: Line chart

    func testLineChartShowsTitleLabelsSeriesAndNiceTicks() {
        let chart = LineChart(title: "Training loss", xLabel: "epoch", yLabel: "cross-entropy",
                              series: [("train", [(1, 0.93), (2, 0.41), (3, 0.27)]),
                                       ("test", [(1, 0.97), (2, 0.52), (3, 0.35)])])
        let (texts, elements) = parse(chart.svg())
        for text in ["Training loss", "epoch", "cross-entropy", "train", "test"] {
            XCTAssertTrue(texts.contains(text), "missing \(text)")
        }
        XCTAssertEqual(elements.filter { $0 == "polyline" }.count, 2)
        // y data 0.27…0.97: steps of 0.2 from 0.2 to 1.0, printed with one decimal.
        for tick in ["0.2", "0.4", "0.6", "0.8", "1.0"] { XCTAssertTrue(texts.contains(tick), "missing tick \(tick)") }
        // x data 1…3: five ticks want a step of 0.5.
        for tick in ["1.0", "1.5", "2.0", "2.5", "3.0"] { XCTAssertTrue(texts.contains(tick), "missing tick \(tick)") }
    }

    func testLineChartEscapesText() {
        let chart = LineChart(title: "a < b & c > d", xLabel: "\"x\" 'quoted'", yLabel: "bell\u{7}",
                              series: [("<script>", [(0, 1), (1, 2)])])
        let svg = chart.svg()
        XCTAssertTrue(svg.contains("a &lt; b &amp; c &gt; d"))
        XCTAssertFalse(svg.contains("<script>"))
        let (texts, _) = parse(svg)
        XCTAssertTrue(texts.contains("a < b & c > d"))
        XCTAssertTrue(texts.contains("<script>"))
        XCTAssertTrue(texts.contains("bell"))  // the control character is dropped, not fatal
    }

    func testLineChartSurvivesBadInput() {
        let cases: [[(name: String, points: [(x: Double, y: Double)])]] = [
            [],                                                       // no series
            [("empty", [])],                                          // a series without points
            [("one", [(3, 0.5)])],                                    // a single point
            [("flat", [(0, 2), (1, 2), (2, 2)])],                     // constant values
            [("zero", [(0, 0), (0, 0)])],                             // constant zero, repeated x
            [("bad", [(0, .nan), (1, .infinity), (.nan, 1), (2, 1), (3, -.infinity)])],
            [("huge", [(0, -1e308), (1, 1e308)])],                    // a span beyond Double's range
            [("tiny", [(0, 1e-12), (1, 2e-12)])],
            (0..<12).map { ("s\($0)", [(0.0, Double($0)), (1.0, Double($0) + 1)]) },  // more series than colours
        ]
        for series in cases {
            let svg = LineChart(title: "t", xLabel: "x", yLabel: "y", series: series).svg()
            parse(svg)
        }
        XCTAssertTrue(LineChart(title: "t", xLabel: "x", yLabel: "y", series: []).svg().contains("no data"))
        XCTAssertTrue(LineChart(title: "t", xLabel: "x", yLabel: "y", series: [("one", [(3, 0.5)])]).svg()
            .contains("<circle"))
    }

    func testLineChartFixedRangeClipsAndLabelsItsTicks() {
        let chart = LineChart(title: "accuracy", xLabel: "epoch", yLabel: "%",
                              series: [("moe", [(0, 0.5), (1, 1.7)])], yRange: 0...1)
        let (texts, _) = parse(chart.svg())
        XCTAssertTrue(texts.contains("0.0") && texts.contains("1.0"))
        XCTAssertFalse(texts.contains("1.2"), "ticks beyond the fixed range")
        XCTAssertTrue(chart.svg().contains("clip-path"))
    }

    // MARK: Heatmap

    func testHeatmapShowsEveryCellAndLegend() {
        let experts = 4
        let values = (0..<10).map { digit in (0..<experts).map { Double(($0 + digit) % experts) / 6 } }
        let heatmap = Heatmap(title: "digit → expert", rowLabels: (0..<10).map(String.init),
                              columnLabels: (0..<experts).map { "E\($0)" }, values: values,
                              xLabel: "expert", yLabel: "digit")
        let svg = heatmap.svg()
        let (texts, elements) = parse(svg)
        for text in ["digit → expert", "expert", "digit", "E0", "E3", "9", "0%", "17%", "50%"] {
            XCTAssertTrue(texts.contains(text), "missing \(text)")
        }
        XCTAssertEqual(elements.filter { $0 == "rect" }.count, 1 + 10 * experts + 1)  // background, cells, legend bar
        XCTAssertTrue(elements.contains("linearGradient"))
        // Dark cells get white text and bright ones black.
        XCTAssertTrue(svg.contains("fill=\"#FFFFFF\">0%"))
        XCTAssertTrue(svg.contains("fill=\"#000000\">50%"))
    }

    func testHeatmapSurvivesBadInput() {
        let cases: [[[Double]]] = [[], [[]], [[0.5]], [[1, 1], [1, 1]], [[.nan, 0.2], [0.3]], [[.infinity, -.infinity]]]
        for values in cases {
            parse(Heatmap(title: "<t>", rowLabels: ["a&b"], columnLabels: [], values: values,
                          xLabel: "x", yLabel: "y").svg())
        }
        let custom = Heatmap(title: "t", rowLabels: [], columnLabels: [], values: [[3, 4]], xLabel: "", yLabel: "",
                             format: { String(format: "%.1f", $0) })
        XCTAssertTrue(parse(custom.svg()).texts.contains("3.0"))
    }

    // MARK: Bar chart

    func testBarChartDrawsGroupsLegendAndReferenceLine() {
        let chart = BarChart(title: "Expert usage", xLabel: "expert", yLabel: "share of tokens",
                             categories: (0..<4).map(String.init),
                             series: [("no aux loss", [0.7, 0.2, 0.1, 0.0]), ("aux loss", [0.26, 0.24, 0.25, 0.25])],
                             referenceLine: (0.25, "uniform 1/E"))
        let svg = chart.svg()
        let (texts, elements) = parse(svg)
        for text in ["Expert usage", "no aux loss", "aux loss", "uniform 1/E", "0", "3"] {
            XCTAssertTrue(texts.contains(text), "missing \(text)")
        }
        XCTAssertEqual(elements.filter { $0 == "rect" }.count, 1 + 8 + 1)  // background, bars, clip rectangle
        XCTAssertTrue(svg.contains("stroke-dasharray"))
    }

    func testBarChartSurvivesBadInput() {
        let cases: [[(name: String, values: [Double])]] = [
            [], [("empty", [])], [("bad", [.nan, .infinity, -1, 2])], [("flat", [0, 0, 0])], [("neg", [-3, -1])],
        ]
        for series in cases {
            parse(BarChart(title: "t", xLabel: "x", yLabel: "y", categories: ["a"], series: series,
                           referenceLine: (.nan, "ref")).svg())
            parse(BarChart(title: "t", xLabel: "x", yLabel: "y", categories: [], series: series,
                           yRange: 0...0.5).svg())
        }
    }

    // MARK: Row chart

    func testRowChartNamesEveryRowAndPrintsEveryValue() {
        let chart = RowChart(title: "Routing ablation", rows: ["top-2", "top-1 (Switch)"],
                             panels: [.init(title: "test accuracy", range: 0.85...1, series: [("acc", [0.9402, 0.9312])],
                                            format: { String(format: "%.2f%%", $0 * 100) }),
                                      .init(title: "load", range: 0...1,
                                            series: [("top-2 share", [0.27, 0.31]), ("dropped", [0, 0.05])],
                                            referenceLine: (0.25, "even top-2 share"))])
        let svg = chart.svg()
        let (texts, elements) = parse(svg)
        // Rows by name (not by number), each value at its bar, and an accuracy axis that starts
        // at 85%, not at 0, so a point of difference is visible.
        for text in ["top-2", "top-1 (Switch)", "94.02%", "93.12%", "27.0%", "5.0%", "85%", "100%", "even top-2 share"] {
            XCTAssertTrue(texts.contains(text), "missing \(text)")
        }
        XCTAssertEqual(elements.filter { $0 == "rect" }.count, 1 + 2 + 4)  // background, accuracy bars, load bars
        XCTAssertTrue(svg.contains("stroke-dasharray"))
    }

    func testRowChartSurvivesBadInput() {
        for series: [(name: String, values: [Double])] in [[], [("bad", [.nan, .infinity, -1, 2])], [("long", [1, 2, 3])]] {
            parse(RowChart(title: "t", rows: ["a <&>"], panels: [.init(title: "p", range: 0...1, series: series,
                                                                       referenceLine: (.nan, "ref"))]).svg())
            parse(RowChart(title: "t", rows: [], panels: [.init(title: "p", range: 1...1, series: series)]).svg())
        }
    }
}
