// MNIST: 70,000 handwritten digits, 28x28 grey pixels each, with their labels.
//
// The data set comes as four IDX files (IDX.swift), usually gzip-compressed
// (Gzip.swift): images and labels for a 60,000-digit training split and a
// 10,000-digit test split. This file finds them in a folder, decodes them, and
// turns the pixels into what the model consumes: one Float per pixel in [0, 1],
// one row of rows*cols floats per image.
//
// Dimension legend: N = images in a split, P = rows * cols pixels per image.
//
// The experiment it feeds: Notebooks/part3-mnist.md, §1.

import Foundation

/// A problem with one data file, printed as one line "FILE: problem", e.g.
/// `data/mnist/train-labels-idx1-ubyte.gz: truncated: header says 60000 labels but only 59000 bytes follow`.
public struct DataError: Error, CustomStringConvertible {
    /// The file (or folder) the problem is about, as a path.
    public let file: String
    /// What is wrong with it, in one line.
    public let problem: String

    public init(file: String, problem: String) {
        self.file = file
        self.problem = problem
    }

    public var description: String {
        "\(file): \(problem)".split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// One split of MNIST (training or test): images as floats, and their labels.
public struct MNISTSplit {
    /// [N, P] row-major: image i is `images[i*P ..< (i+1)*P]`, each pixel/255 in [0, 1].
    public let images: [Float]
    /// [N]: the digit 0...9 drawn in each image.
    public let labels: [UInt8]
    /// N, the number of images.
    public let count: Int
    /// Pixel rows per image (28 for MNIST).
    public let rows: Int
    /// Pixel columns per image (28 for MNIST).
    public let cols: Int

    /// Wraps existing data; `images.count` must be `labels.count * rows * cols`.
    public init(images: [Float], labels: [UInt8], rows: Int, cols: Int) {
        precondition(rows >= 0 && cols >= 0 && images.count == labels.count * rows * cols,
                     "MNISTSplit: \(images.count) pixels do not make \(labels.count) images of \(rows)x\(cols)")
        self.images = images
        self.labels = labels
        self.count = labels.count
        self.rows = rows
        self.cols = cols
    }

    /// The first `n` images and labels (all of them if `n >= count`), e.g. for a quick run.
    public func prefix(_ n: Int) -> MNISTSplit {
        precondition(n >= 0, "MNISTSplit.prefix: negative count \(n)")
        let kept = min(n, count)
        return MNISTSplit(images: Array(images[0..<(kept * rows * cols)]), labels: Array(labels[0..<kept]),
                          rows: rows, cols: cols)
    }
}

/// The MNIST data set: a training and a test split, loaded from a folder of IDX files.
///
///     let directory = MNIST.resolveDirectory(flag: nil, environment: ProcessInfo.processInfo.environment)
///     let mnist = try MNIST.load(directory: directory)   // throws DataError
///     print(mnist.train.count, mnist.test.count)          // 60000 10000
public struct MNIST {
    public let train: MNISTSplit
    public let test: MNISTSplit

    public init(train: MNISTSplit, test: MNISTSplit) {
        self.train = train
        self.test = test
    }

    /// The four canonical file names, without ".gz": train images, train labels,
    /// test images, test labels.
    public static let fileNames = [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    ]

    /// Loads all four files from `directory`. Each may be `NAME.gz` or `NAME`
    /// (already decompressed); the .gz is preferred when both exist.
    ///
    /// - Throws: `DataError` naming the file and the problem: missing, not
    ///   decompressible, not the right IDX file, or images and labels disagreeing.
    /// - Complexity: O(total pixels); about half a second for all of MNIST.
    public static func load(directory: URL) throws -> MNIST {
        let train = try loadSplit(images: fileNames[0], labels: fileNames[1], in: directory)
        let test = try loadSplit(images: fileNames[2], labels: fileNames[3], in: directory)
        guard train.rows == test.rows && train.cols == test.cols else {
            throw DataError(file: display(directory), problem: "training images are \(train.rows)x\(train.cols) "
                                + "but test images are \(test.rows)x\(test.cols)")
        }
        return MNIST(train: train, test: test)
    }

    /// The names (from `fileNames`) for which neither `NAME.gz` nor `NAME` exists in `directory`.
    public static func missingFiles(in directory: URL) -> [String] {
        fileNames.filter { existingFile(named: $0, in: directory) == nil }
    }

    /// Where to look for the data: the `--data-dir` flag if given, else the
    /// `MNIST_DIR` environment variable, else `./data/mnist`. Relative paths
    /// are taken from the current directory. Empty values count as not given.
    public static func resolveDirectory(flag: String?, environment: [String: String]) -> URL {
        let chosen = [flag, environment["MNIST_DIR"]].compactMap { $0 }.first { !$0.isEmpty } ?? "data/mnist"
        return URL(fileURLWithPath: chosen, isDirectory: true)
    }

    // MARK: Loading

    static func loadSplit(images imagesName: String, labels labelsName: String, in directory: URL) throws -> MNISTSplit {
        let (imagesFile, imagesBytes) = try readDecompressed(named: imagesName, in: directory)
        let parsed: IDX.Images
        do { parsed = try IDX.parseImages(imagesBytes) } catch {
            throw DataError(file: imagesFile, problem: "\(error)")
        }
        let (labelsFile, labelsBytes) = try readDecompressed(named: labelsName, in: directory)
        let labels: [UInt8]
        do { labels = try IDX.parseLabels(labelsBytes) } catch {
            throw DataError(file: labelsFile, problem: "\(error)")
        }
        guard labels.count == parsed.count else {
            throw DataError(file: labelsFile, problem: "has \(labels.count) labels but \(imagesFile) has "
                                + "\(parsed.count) images; the two files must come from the same split")
        }
        // Dividing (rather than multiplying by 1/255) gives the correctly
        // rounded float, so 255 maps to exactly 1 and 0 to exactly 0.
        let images = parsed.pixels.map { Float($0) / 255 }  // [N, P]
        return MNISTSplit(images: images, labels: labels, rows: parsed.rows, cols: parsed.cols)
    }

    /// Reads `NAME.gz` or `NAME` and returns its path for messages and its
    /// contents, gunzipped when they are gzip data. We go by the content's
    /// magic number, not the name: some browsers and servers decompress a .gz
    /// on the fly but keep the name, and an IDX file (00 00 08 ..) can never
    /// be mistaken for gzip (1f 8b).
    static func readDecompressed(named name: String, in directory: URL) throws -> (file: String, bytes: [UInt8]) {
        guard let url = existingFile(named: name, in: directory) else {
            throw DataError(file: display(directory.appendingPathComponent(name + ".gz")),
                            problem: "missing: neither \(name).gz nor \(name) is in \(display(directory))")
        }
        let file = display(url)
        let raw: [UInt8]
        do { raw = [UInt8](try InputFile.read(url)) } catch let e as InputFileError {
            throw DataError(file: file, problem: e.problem)
        }
        guard Gzip.isGzip(raw) else { return (file, raw) }
        do { return (file, try Gzip.decompress(raw)) } catch {
            throw DataError(file: file, problem: "\(error)")
        }
    }

    static func existingFile(named name: String, in directory: URL) -> URL? {
        [name + ".gz", name].lazy
            .map { directory.appendingPathComponent($0) }
            .first { url in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && !isDirectory.boolValue
            }
    }

    /// A path as the user typed it where possible (relative stays relative).
    static func display(_ url: URL) -> String { url.relativePath }
}
