// Tests for the IDX parsers (IDX.swift): exact sizes, magic numbers, label
// range and absurd headers, on small files built here byte by byte.

import XCTest
@testable import MoE

// MARK: Builders shared by the data tests

func bigEndian32(_ value: Int) -> [UInt8] {
    (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * (3 - $0))) }
}

/// An IDX images file; pixel (image, index) = `pixel(image, index)`.
func idxImages(count: Int, rows: Int, cols: Int,
               pixel: (Int, Int) -> UInt8 = { image, index in UInt8((image * 7 + index * 13) % 256) }) -> [UInt8] {
    var bytes = bigEndian32(0x0803) + bigEndian32(count) + bigEndian32(rows) + bigEndian32(cols)
    for image in 0..<count { for index in 0..<(rows * cols) { bytes.append(pixel(image, index)) } }
    return bytes
}

/// An IDX labels file.
func idxLabels(_ labels: [UInt8]) -> [UInt8] {
    bigEndian32(0x0801) + bigEndian32(labels.count) + labels
}

final class IDXTests: XCTestCase {
    func testParsesImages() throws {
        let images = try IDX.parseImages(idxImages(count: 3, rows: 2, cols: 4))
        XCTAssertEqual([images.count, images.rows, images.cols], [3, 2, 4])
        XCTAssertEqual(images.pixels.count, 3 * 2 * 4)
        XCTAssertEqual(images.pixels[1 * 8 + 5], UInt8((1 * 7 + 5 * 13) % 256))  // image 1, pixel 5
        XCTAssertEqual(try IDX.parseImages(idxImages(count: 0, rows: 28, cols: 28)).count, 0)
    }

    func testParsesLabels() throws {
        XCTAssertEqual(try IDX.parseLabels(idxLabels([0, 9, 3, 3])), [0, 9, 3, 3])
        XCTAssertEqual(try IDX.parseLabels(idxLabels([])), [])
    }

    func testSizeMustMatchTheHeaderExactly() {
        let images = idxImages(count: 3, rows: 2, cols: 4)
        assertIDXError(try IDX.parseImages(Array(images.dropLast())),
                       .truncated(announced: "3 images of 2x4 (24 bytes)", expectedBytes: 24, actualBytes: 23))
        assertIDXError(try IDX.parseImages(images + [0]),
                       .trailingBytes(announced: "3 images of 2x4 (24 bytes)", extraBytes: 1))
        let labels = idxLabels([1, 2, 3])
        assertIDXError(try IDX.parseLabels(Array(labels.dropLast())),
                       .truncated(announced: "3 labels", expectedBytes: 3, actualBytes: 2))
        assertIDXError(try IDX.parseLabels(labels + [0, 0]), .trailingBytes(announced: "3 labels", extraBytes: 2))
        // Every prefix fails, header or body.
        for cut in 0..<images.count { XCTAssertThrowsError(try IDX.parseImages(Array(images[0..<cut]))) }
        for cut in 0..<labels.count { XCTAssertThrowsError(try IDX.parseLabels(Array(labels[0..<cut]))) }
        assertIDXError(try IDX.parseImages([0, 0, 8]), .headerTruncated(needed: 16, got: 3))
    }

    func testMessagesReadAsOneLine() {
        // 60,000 labels announced, 59,000 present: the message the loader shows.
        let short = bigEndian32(0x0801) + bigEndian32(60000) + [UInt8](repeating: 1, count: 59000)
        XCTAssertThrowsError(try IDX.parseLabels(short)) { error in
            XCTAssertEqual("\(error)", "truncated: header says 60000 labels but only 59000 bytes follow")
        }
        XCTAssertThrowsError(try IDX.parseImages(idxLabels([1]))) { error in
            XCTAssertEqual("\(error)", "not the expected IDX file: magic is 0x00000801, expected 0x00000803")
        }
    }

    func testWrongMagicAndLabelRange() {
        assertIDXError(try IDX.parseImages(idxLabels([1, 2])), .wrongMagic(expected: 0x0803, found: 0x0801))
        assertIDXError(try IDX.parseLabels(idxImages(count: 1, rows: 1, cols: 1)),
                       .wrongMagic(expected: 0x0801, found: 0x0803))
        assertIDXError(try IDX.parseLabels(idxLabels([0, 9, 10])), .labelOutOfRange(index: 2, value: 10))
        assertIDXError(try IDX.parseLabels(idxLabels([255])), .labelOutOfRange(index: 0, value: 255))
    }

    func testAbsurdHeadersAreRejectedBeforeAllocating() {
        // 2^32 - 1 in every dimension: the product would overflow 64 bits, and
        // even a plausible-looking 2^24 x 2^24 image would ask for terabytes.
        let huge = 0xFFFF_FFFF
        let headerOnly = { (count: Int, rows: Int, cols: Int) in
            bigEndian32(0x0803) + bigEndian32(count) + bigEndian32(rows) + bigEndian32(cols)
        }
        assertIDXError(try IDX.parseImages(headerOnly(huge, huge, huge)),
                       .implausibleDimensions(count: huge, rows: huge, cols: huge))
        assertIDXError(try IDX.parseImages(headerOnly(1, 1 << 24, 1 << 24)),
                       .implausibleDimensions(count: 1, rows: 1 << 24, cols: 1 << 24))
        assertIDXError(try IDX.parseImages(headerOnly(5, 0, 28)), .implausibleDimensions(count: 5, rows: 0, cols: 28))
        assertIDXError(try IDX.parseLabels(bigEndian32(0x0801) + bigEndian32(huge)),
                       .implausibleDimensions(count: huge, rows: 0, cols: 0))
    }

    private func assertIDXError<T>(_ expression: @autoclosure () throws -> T, _ expected: IDXError,
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            XCTAssertEqual(error as? IDXError, expected, file: file, line: line)
        }
    }
}
