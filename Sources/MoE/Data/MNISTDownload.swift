// Downloading MNIST: fetch the missing .gz files from public mirrors.
//
// Yann LeCun's original site no longer serves the files reliably, so the
// widely used mirrors are PyTorch's (an S3 bucket that torchvision downloads
// from) and the CVDF's (a Google Cloud Storage bucket that TensorFlow's
// tutorials use). We try them in order, file by file.
//
// A download is untrusted until proven otherwise. A mirror can answer with an
// HTML error page and status 200, a connection can drop halfway, a proxy can
// truncate. So the bytes are kept in memory, gunzipped and parsed as the right
// IDX file (images or labels) first, and only then written, with AtomicFile:
// to a temporary file in the target folder that is renamed into place. A
// rename within one file system is atomic, so another process (or the next
// run after a crash) sees either no file or the complete one, never half.
//
// The experiment it feeds: Notebooks/part3-mnist.md, §1.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking  // URLSession lives here on Linux
#endif

/// Every mirror failed for at least one file. The one-line description says
/// which files are missing, where to get them by hand and where to put them.
public struct DownloadError: Error, CustomStringConvertible {
    /// The files still missing, as served ("train-images-idx3-ubyte.gz").
    public let missingFiles: [String]
    /// The base URLs that were tried, in order.
    public let mirrors: [URL]
    /// The folder the files belong in.
    public let directory: URL
    /// One entry per failed attempt: "URL: reason".
    public let failures: [String]

    public var description: String {
        // Every file's own errors, mirror by mirror: the first mirror's reason is
        // often not the last one's, and either may be the one to fix.
        let perFile = missingFiles.map { file -> String in
            let reasons = failures.filter { $0.contains("/" + file + ": ") }
                .map { $0.replacingOccurrences(of: "/" + file + ": ", with: ": ") }
            return reasons.isEmpty ? file : "\(file) (\(reasons.joined(separator: "; ")))"
        }
        return "could not download \(perFile.joined(separator: ", ")); download "
            + (missingFiles.count == 1 ? "it" : "them") + " from "
            + mirrors.map(\.absoluteString).joined(separator: " or ")
            + " and put " + (missingFiles.count == 1 ? "it" : "them") + " in \(directory.path)"
    }
}

/// Fetches missing MNIST files over HTTP(S).
///
///     let directory = MNIST.resolveDirectory(flag: nil, environment: ProcessInfo.processInfo.environment)
///     try MNISTDownload.downloadMissing(into: directory) { p in
///         print("\(p.file): \(p.bytesReceived) of \(p.bytesExpected ?? -1) bytes")
///     }
///     let mnist = try MNIST.load(directory: directory)
public enum MNISTDownload {
    /// Public mirrors of the four canonical .gz files, in the order they are tried.
    public static let defaultMirrors: [URL] = [
        URL(string: "https://ossci-datasets.s3.amazonaws.com/mnist/")!,
        URL(string: "https://storage.googleapis.com/cvdf-datasets/mnist/")!,
    ]

    /// The largest response accepted: the biggest MNIST file is ~9.9 MB
    /// compressed, so anything far above is not MNIST and must not fill memory.
    public static let maxDownloadBytes = 64 << 20

    /// How far one file's download has come; reported as data arrives, on a
    /// background thread.
    public struct Progress {
        /// The file being fetched, e.g. "train-images-idx3-ubyte.gz".
        public let file: String
        /// The full URL it is being fetched from.
        public let url: URL
        /// Bytes received so far for this attempt.
        public let bytesReceived: Int
        /// The size the server announced (Content-Length), if it did.
        public let bytesExpected: Int?
        /// Set on the last report of an attempt that failed: why (the next
        /// mirror is tried after it). nil while data arrives, and on success.
        public var failure: String? = nil
    }

    /// The mirrors to use: `override` if given and not empty, else the
    /// comma-separated base URLs in `MNIST_MIRRORS`, else `defaultMirrors`.
    /// Entries that are not http(s) URLs are ignored.
    public static func mirrors(override: [URL]?, environment: [String: String]) -> [URL] {
        if let override, !override.isEmpty { return override }
        let fromEnvironment = (environment["MNIST_MIRRORS"] ?? "")
            .split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .compactMap { URL(string: $0) }
            .filter { ["http", "https"].contains($0.scheme?.lowercased() ?? "") }
        return fromEnvironment.isEmpty ? defaultMirrors : fromEnvironment
    }

    /// Downloads every file that `MNIST.missingFiles(in:)` reports into
    /// `directory` (created if needed) as `NAME.gz`, trying each mirror in order.
    ///
    /// - Parameters:
    ///   - mirrors: base URLs to try; nil means `MNIST_MIRRORS` or the defaults.
    ///   - timeout: seconds a request may stall before it fails; a whole file
    ///     may take ten times as long. A mirror that never answers (refused,
    ///     unknown host, or silent for `timeout`) is not tried again for the
    ///     remaining files, so a dead mirror costs one timeout, not four.
    ///   - progress: called as bytes arrive, from a background thread.
    /// - Returns: the file names downloaded (empty when nothing was missing).
    /// - Throws: `DownloadError` if some file could not be fetched from any
    ///   mirror (the others are kept), `DataError` if the folder cannot be created.
    @discardableResult
    public static func downloadMissing(into directory: URL, mirrors: [URL]? = nil,
                                       environment: [String: String] = ProcessInfo.processInfo.environment,
                                       timeout: TimeInterval = 20,
                                       progress: ((Progress) -> Void)? = nil) throws -> [String] {
        let missing = MNIST.missingFiles(in: directory)
        guard !missing.isEmpty else { return [] }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw DataError(file: directory.path, problem: "cannot create folder: \(error.localizedDescription)")
        }

        let bases = self.mirrors(override: mirrors, environment: environment)
        var unreachable: [URL: String] = [:]   // mirror → why it is skipped for the remaining files
        var downloaded: [String] = []
        var stillMissing: [String] = []
        var failures: [String] = []
        for name in missing {
            let file = name + ".gz"
            var done = false
            for base in bases where !done {
                let url = fileURL(base: base, file: file)
                if let reason = unreachable[base] {
                    failures.append("\(url.absoluteString): not tried (\(reason) for an earlier file)")
                    continue
                }
                var received = 0, expected: Int? = nil
                do {
                    let bytes = try fetch(url, timeout: timeout) { r, e in
                        received = r; expected = e
                        progress?(Progress(file: file, url: url, bytesReceived: r, bytesExpected: e))
                    }
                    try validate(bytes, name: name)
                    try AtomicFile.write(Data(bytes), to: directory.appendingPathComponent(file))
                    done = true
                } catch {
                    if let attempt = error as? AttemptError, attempt.unreachable { unreachable[base] = attempt.description }
                    failures.append("\(url.absoluteString): \(error)")
                    progress?(Progress(file: file, url: url, bytesReceived: received, bytesExpected: expected,
                                       failure: "\(error)"))
                }
            }
            if done { downloaded.append(file) } else { stillMissing.append(file) }
        }
        guard stillMissing.isEmpty else {
            throw DownloadError(missingFiles: stillMissing, mirrors: bases, directory: directory, failures: failures)
        }
        return downloaded
    }

    /// `base` + `file`, whether or not the base ends in a slash. (Cannot fail:
    /// the base is already a valid URL and MNIST file names need no escaping.)
    static func fileURL(base: URL, file: String) -> URL {
        let text = base.absoluteString
        return URL(string: (text.hasSuffix("/") ? text : text + "/") + file)!
    }

    /// Why one attempt failed, for `DownloadError.failures`.
    struct AttemptError: Error, CustomStringConvertible {
        let description: String
        /// The server never answered (refused, not found, or silent): later
        /// files skip this mirror instead of waiting for it again.
        var unreachable = false
    }

    /// Gunzips and parses the bytes as the IDX file `name` should be.
    static func validate(_ bytes: [UInt8], name: String) throws {
        do {
            let raw = try Gzip.decompress(bytes)
            if name.contains("images") { _ = try IDX.parseImages(raw) } else { _ = try IDX.parseLabels(raw) }
        } catch {
            throw AttemptError(description: "downloaded file rejected: \(error)")
        }
    }

    // MARK: HTTP

    /// GETs `url` and returns the body of a 200 response. Blocks the calling
    /// thread: URLSession calls its delegate on its own queue, and a semaphore
    /// turns "the task completed" into a return from this function.
    static func fetch(_ url: URL, timeout: TimeInterval, progress: @escaping (Int, Int?) -> Void) throws -> [UInt8] {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout       // longest stall between packets
        configuration.timeoutIntervalForResource = timeout * 10  // longest whole download
        let receiver = Receiver(progress: progress)
        let session = URLSession(configuration: configuration, delegate: receiver, delegateQueue: nil)
        defer { session.invalidateAndCancel() }  // the session retains its delegate until invalidated

        var request = URLRequest(url: url)
        request.timeoutInterval = timeout
        let task = session.dataTask(with: request)
        task.resume()
        // URLSession's own timeouts are not enforced alike on every platform (a
        // server that accepts the connection and never answers held a request
        // for minutes), so this loop enforces both: `timeout` seconds without a
        // byte, `timeout` × 10 for the whole file.
        let start = Date()
        while receiver.finished.wait(timeout: .now() + min(0.1, timeout)) != .success {
            let silent = Date().timeIntervalSince(receiver.lastActivity ?? start)
            if silent > timeout || Date().timeIntervalSince(start) > timeout * 10 {
                task.cancel()
                let neverAnswered = receiver.lastActivity == nil
                throw AttemptError(description: silent > timeout
                    ? (neverAnswered ? "no answer within \(seconds(timeout))"
                                     : "the server stopped sending for \(seconds(timeout))")
                    : "not finished within \(seconds(timeout * 10))", unreachable: neverAnswered)
            }
        }
        if let status = receiver.statusCode, status != 200 { throw AttemptError(description: "HTTP \(status)") }
        if receiver.tooLarge { throw AttemptError(description: "response larger than \(maxDownloadBytes) bytes") }
        if let error = receiver.error {
            let code = (error as? URLError)?.code
            let unreachable = [.cannotConnectToHost, .cannotFindHost, .dnsLookupFailed, .notConnectedToInternet]
                .contains(code) || (code == .timedOut && receiver.lastActivity == nil)
            throw AttemptError(description: readable(error, timeout: timeout), unreachable: unreachable)
        }
        return [UInt8](receiver.body)
    }

    /// "12 s", "0.5 s".
    static func seconds(_ t: TimeInterval) -> String { String(format: "%g s", t) }

    /// A URLSession error in words ("NSURLErrorDomain error -1001" says nothing to a reader).
    static func readable(_ error: Error, timeout: TimeInterval) -> String {
        guard let url = error as? URLError else { return error.localizedDescription }
        switch url.code {
        case .timedOut: return "no answer within \(seconds(timeout))"
        case .cannotConnectToHost: return "connection refused"
        case .cannotFindHost, .dnsLookupFailed: return "host not found"
        case .notConnectedToInternet: return "no network connection"
        case .networkConnectionLost: return "the connection dropped"
        case .secureConnectionFailed, .serverCertificateUntrusted, .serverCertificateHasBadDate:
            return "TLS failed (\(url.localizedDescription))"
        default: return url.localizedDescription
        }
    }

    /// Collects one response. URLSession calls these methods one at a time on
    /// its delegate queue, and `fetch` reads the fields only after `finished`
    /// is signalled — except `lastActivity`, which has its lock: hence `@unchecked Sendable`.
    final class Receiver: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let progress: (Int, Int?) -> Void
        let finished = DispatchSemaphore(value: 0)
        var body = Data()
        var expected: Int?
        var statusCode: Int?
        var tooLarge = false
        var error: Error?
        /// When the server last sent something (read by `fetch` while it waits, hence the lock).
        private let lock = NSLock()
        private var lastActivityTime: Date?
        var lastActivity: Date? { lock.lock(); defer { lock.unlock() }; return lastActivityTime }
        private func touch() { lock.lock(); lastActivityTime = Date(); lock.unlock() }

        init(progress: @escaping (Int, Int?) -> Void) { self.progress = progress }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            touch()
            statusCode = (response as? HTTPURLResponse)?.statusCode
            expected = response.expectedContentLength >= 0 ? Int(response.expectedContentLength) : nil
            tooLarge = (expected ?? 0) > MNISTDownload.maxDownloadBytes
            completionHandler(statusCode == 200 && !tooLarge ? .allow : .cancel)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            touch()
            body.append(data)
            if body.count > MNISTDownload.maxDownloadBytes {
                tooLarge = true
                dataTask.cancel()
                return
            }
            progress(body.count, expected)
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            self.error = error
            finished.signal()
        }
    }
}
