// Tests for the MNIST loader (MNIST.swift): the real files where TestSupport.swift finds them
// when they are there, and small generated folders for every way loading can fail.

import XCTest
import Foundation
@testable import MoE

/// A fresh empty folder under the system's temporary directory.
func makeTemporaryDataFolder(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("moe-\(name)-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// A complete small MNIST folder: `trainCount` and `testCount` images of rows x cols,
/// label of image i = i % 10. `gzipped` picks, per file, NAME.gz or plain NAME.
func writeSmallMNIST(to folder: URL, trainCount: Int = 5, testCount: Int = 3, rows: Int = 4, cols: Int = 3,
                     gzipped: [Bool] = [true, false, false, true]) throws {
    let contents = [
        idxImages(count: trainCount, rows: rows, cols: cols),
        idxLabels((0..<trainCount).map { UInt8($0 % 10) }),
        idxImages(count: testCount, rows: rows, cols: cols),
        idxLabels((0..<testCount).map { UInt8($0 % 10) }),
    ]
    for (index, name) in MNIST.fileNames.enumerated() {
        let bytes = gzipped[index] ? storedGzip(contents[index]) : contents[index]
        try Data(bytes).write(to: folder.appendingPathComponent(name + (gzipped[index] ? ".gz" : "")))
    }
}

final class MNISTTests: XCTestCase {
    func testLoadsTheRealDataSet() throws {
        let folder = try TestData.requireMNIST()   // $MNIST_DIR, ./data/mnist or ../shared/data/mnist
        let gz = [UInt8](try Data(contentsOf: folder.appendingPathComponent("train-images-idx3-ubyte.gz")))
        let start = Date()
        let raw = try Gzip.decompress(gz)
        note("gunzip train-images: \(gz.count) -> \(raw.count) bytes in "
              + String(format: "%.3f", Date().timeIntervalSince(start)) + " s")
        XCTAssertEqual(raw.count, 47_040_016)

        let loadStart = Date()
        let mnist = try MNIST.load(directory: folder)
        note("MNIST.load (4 files, gunzip + parse + to Float): "
              + String(format: "%.3f", Date().timeIntervalSince(loadStart)) + " s")
        XCTAssertEqual([mnist.train.count, mnist.test.count], [60000, 10000])
        for split in [mnist.train, mnist.test] {
            XCTAssertEqual([split.rows, split.cols], [28, 28])
            XCTAssertEqual(split.images.count, split.count * 784)
            XCTAssertEqual(split.labels.count, split.count)
            var (lowest, highest) = (Float.infinity, -Float.infinity)
            for pixel in split.images {
                lowest = min(lowest, pixel)
                highest = max(highest, pixel)
            }
            XCTAssertEqual([lowest, highest], [0, 1], "pixels span exactly [0, 1]")
        }
        // Label counts from shared/data/README.md.
        XCTAssertEqual(histogram(mnist.train.labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
        XCTAssertEqual(histogram(mnist.test.labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
        // The first training digit is a 5, and its pixels are raw bytes / 255.
        XCTAssertEqual(mnist.train.labels[0], 5)
        let firstImage = raw[16..<(16 + 784)].map { Float($0) / 255 }
        XCTAssertEqual(Array(mnist.train.images[0..<784]), firstImage)
    }

    func testLoadsGzippedAndPlainFiles() throws {
        let folder = try makeTemporaryDataFolder("mnist")
        defer { try? FileManager.default.removeItem(at: folder) }
        try writeSmallMNIST(to: folder)
        let mnist = try MNIST.load(directory: folder)
        XCTAssertEqual([mnist.train.count, mnist.train.rows, mnist.train.cols, mnist.test.count], [5, 4, 3, 3])
        XCTAssertEqual(mnist.train.labels, [0, 1, 2, 3, 4])
        // Image 2, pixel 7 is (2*7 + 7*13) % 256 = 105, stored as 105/255.
        XCTAssertEqual(mnist.train.images[2 * 12 + 7], Float(105) / 255)

        let first = mnist.train.prefix(2)
        XCTAssertEqual(first.count, 2)
        XCTAssertEqual(first.labels, [0, 1])
        XCTAssertEqual(first.images, Array(mnist.train.images[0..<24]))
        XCTAssertEqual(mnist.test.prefix(100).count, 3)
        XCTAssertEqual(mnist.test.prefix(0).images, [])
    }

    func testGoesByContentNotName() throws {
        // A NAME.gz that some tool already decompressed still loads.
        let folder = try makeTemporaryDataFolder("mnist")
        defer { try? FileManager.default.removeItem(at: folder) }
        try writeSmallMNIST(to: folder)
        let labels = folder.appendingPathComponent("t10k-labels-idx1-ubyte.gz")
        try Data(idxLabels([7, 8, 9])).write(to: labels)
        XCTAssertEqual(try MNIST.load(directory: folder).test.labels, [7, 8, 9])
    }

    func testMissingFiles() throws {
        let folder = try makeTemporaryDataFolder("mnist")
        defer { try? FileManager.default.removeItem(at: folder) }
        XCTAssertEqual(MNIST.missingFiles(in: folder), MNIST.fileNames)
        try writeSmallMNIST(to: folder)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("train-labels-idx1-ubyte"))
        try FileManager.default.removeItem(at: folder.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))
        XCTAssertEqual(MNIST.missingFiles(in: folder), ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"])
        assertDataError(try MNIST.load(directory: folder), file: folder.path + "/train-labels-idx1-ubyte.gz",
                        problemPrefix: "missing: neither train-labels-idx1-ubyte.gz nor train-labels-idx1-ubyte")
    }

    func testErrorsNameTheFileAndTheProblem() throws {
        let folder = try makeTemporaryDataFolder("mnist")
        defer { try? FileManager.default.removeItem(at: folder) }
        let labelsFile = folder.appendingPathComponent("train-labels-idx1-ubyte.gz")

        // Truncated inside the IDX data (the gzip itself is intact).
        try writeSmallMNIST(to: folder, gzipped: [true, true, true, true])
        try Data(storedGzip(Array(idxLabels([1, 2, 3, 4, 5]).dropLast()))).write(to: labelsFile)
        assertDataError(try MNIST.load(directory: folder), file: labelsFile.path,
                        problemPrefix: "truncated: header says 5 labels but only 4 bytes follow")

        // A damaged .gz: the CRC catches it.
        var damaged = storedGzip(idxLabels([1, 2, 3, 4, 5]))
        damaged[damaged.count - 10] ^= 0x04  // a label byte inside the stored block
        try Data(damaged).write(to: labelsFile)
        assertDataError(try MNIST.load(directory: folder), file: labelsFile.path, problemPrefix: "corrupt: CRC-32")

        // Images and labels that disagree in count.
        try Data(storedGzip(idxLabels([1, 2, 3, 4]))).write(to: labelsFile)
        assertDataError(try MNIST.load(directory: folder), file: labelsFile.path,
                        problemPrefix: "has 4 labels but \(folder.path)/train-images-idx3-ubyte.gz has 5 images")

        // Training and test images of different sizes.
        try writeSmallMNIST(to: folder, gzipped: [true, true, true, true])
        try Data(storedGzip(idxImages(count: 3, rows: 5, cols: 5)))
            .write(to: folder.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        assertDataError(try MNIST.load(directory: folder), file: folder.path,
                        problemPrefix: "training images are 4x3 but test images are 5x5")
    }

    func testDataErrorIsOneLine() {
        let error = DataError(file: "data/mnist/train-labels-idx1-ubyte.gz",
                              problem: "truncated: header says 60000 labels\nbut only 59000 bytes follow")
        XCTAssertEqual(error.description, "data/mnist/train-labels-idx1-ubyte.gz: truncated: header says "
                       + "60000 labels but only 59000 bytes follow")
    }

    func testResolveDirectory() {
        let cwd = FileManager.default.currentDirectoryPath
        XCTAssertEqual(MNIST.resolveDirectory(flag: "/tmp/flag", environment: ["MNIST_DIR": "/tmp/env"]).path,
                       "/tmp/flag")
        XCTAssertEqual(MNIST.resolveDirectory(flag: nil, environment: ["MNIST_DIR": "/tmp/env"]).path, "/tmp/env")
        XCTAssertEqual(MNIST.resolveDirectory(flag: "", environment: ["MNIST_DIR": "/tmp/env"]).path, "/tmp/env")
        XCTAssertEqual(MNIST.resolveDirectory(flag: nil, environment: [:]).path, cwd + "/data/mnist")
        XCTAssertEqual(MNIST.resolveDirectory(flag: nil, environment: [:]).relativePath, "data/mnist")
    }

    private func histogram(_ labels: [UInt8]) -> [Int] {
        var counts = [Int](repeating: 0, count: 10)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }

    private func assertDataError<T>(_ expression: @autoclosure () throws -> T, file: String, problemPrefix: String,
                                    line: UInt = #line) {
        XCTAssertThrowsError(try expression(), line: line) { error in
            guard let dataError = error as? DataError else { return XCTFail("not a DataError: \(error)", line: line) }
            XCTAssertEqual(dataError.file, file, line: line)
            XCTAssertTrue(dataError.problem.hasPrefix(problemPrefix), "problem: \(dataError.problem)", line: line)
            XCTAssertEqual(dataError.description, "\(file): \(dataError.problem)", line: line)
            XCTAssertFalse(dataError.description.contains("\n"), line: line)
        }
    }
}
