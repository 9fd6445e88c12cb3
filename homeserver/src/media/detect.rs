//! What the bytes of an upload are, by magic numbers and structure, never by the
//! declared `Content-Type` or the file name.
//!
//! [`infer`] recognises most formats from the first bytes. On top of it, because the
//! media policy exists to keep Office documents and executables out:
//!
//! - ZIP archives are classified from their entry names (central directory and local
//!   headers) and `[Content_Types].xml`: Word, Excel and PowerPoint documents (with or
//!   without macros), Java and Android archives, Windows app packages. An archive found
//!   at the end of a file that starts as something else (a PNG with a `.docx` appended)
//!   is classified too, and a dangerous archive wins over the head.
//! - OLE2 compound files (`D0 CF 11 E0 A1 B1 1A E1`) are legacy Office documents
//!   (doc, xls, ppt, told apart by their directory entries) or other compound files
//!   (MSI installers, Outlook messages, password-protected Office documents).
//! - Plain text is valid UTF-8 without NUL bytes.
//!
//! Detection runs while an upload streams in ([`Sniffer::feed`]) and ends with a look
//! at the stored file ([`Sniffer::finish`]) for the ZIP directory and OLE2 entries.

use std::io::{self, Read, Seek, SeekFrom};

pub const OCTET_STREAM: &str = "application/octet-stream";
pub const TEXT_PLAIN: &str = "text/plain";
pub const ZIP: &str = "application/zip";
pub const OLE_STORAGE: &str = "application/x-ole-storage";
pub const DOC: &str = "application/msword";
pub const XLS: &str = "application/vnd.ms-excel";
pub const PPT: &str = "application/vnd.ms-powerpoint";
pub const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
pub const DOCM: &str = "application/vnd.ms-word.document.macroEnabled.12";
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
pub const XLSM: &str = "application/vnd.ms-excel.sheet.macroEnabled.12";
pub const PPTX: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";
pub const PPTM: &str = "application/vnd.ms-powerpoint.presentation.macroEnabled.12";
pub const JAR: &str = "application/java-archive";
pub const APK: &str = "application/vnd.android.package-archive";
pub const APPX: &str = "application/vnd.ms-appx";

/// How much of the start of a file [`infer`] looks at.
const HEAD_LEN: usize = 64 * 1024;
const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
/// Upper bounds on what is read of a ZIP's structure, whatever its records claim.
const MAX_CENTRAL_DIRECTORY: u64 = 16 * 1024 * 1024;
const MAX_CONTENT_TYPES: u64 = 1024 * 1024;

/// The type of a whole file, from its bytes.
pub fn detect(bytes: &[u8]) -> &'static str {
    let mut sniffer = Sniffer::new();
    sniffer.feed(bytes);
    sniffer.finish(&mut io::Cursor::new(bytes)).unwrap_or(OCTET_STREAM)
}

/// Detection over a stream: [`feed`](Self::feed) every chunk in order, then
/// [`finish`](Self::finish) with the complete content.
#[derive(Debug, Default)]
pub struct Sniffer {
    head: Vec<u8>,
    len: u64,
    /// Still possibly text: valid UTF-8 so far and no NUL.
    text: bool,
    /// The start of a UTF-8 sequence cut by the chunk boundary.
    carry: Vec<u8>,
}

impl Sniffer {
    pub fn new() -> Self {
        Self { text: true, ..Self::default() }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if self.head.len() < HEAD_LEN {
            let take = chunk.len().min(HEAD_LEN - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if !self.text {
            return;
        }
        if chunk.contains(&0) {
            self.text = false;
            return;
        }
        // Complete a sequence begun in the previous chunk, one byte at a time.
        while !self.carry.is_empty() {
            let Some((&b, rest)) = chunk.split_first() else { return };
            self.carry.push(b);
            chunk = rest;
            match std::str::from_utf8(&self.carry) {
                Ok(_) => self.carry.clear(),
                Err(e) if e.error_len().is_none() && self.carry.len() < 4 => {}
                Err(_) => {
                    self.text = false;
                    return;
                }
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => {}
            Err(e) if e.error_len().is_none() => self.carry = chunk[e.valid_up_to()..].to_vec(),
            Err(_) => self.text = false,
        }
    }

    /// The type, given the complete content that was fed (to read a ZIP directory or
    /// OLE2 entries, which may be anywhere in the file).
    pub fn finish<R: Read + Seek>(self, content: &mut R) -> io::Result<&'static str> {
        if self.head.starts_with(&OLE_MAGIC) {
            return ole_kind(content);
        }
        let archive = zip_kind(content, self.len, self.head.starts_with(b"PK\x03\x04"))?;
        if let Some(kind) = archive.filter(|k| *k != ZIP) {
            return Ok(kind);
        }
        if let Some(t) = infer::get(&self.head) {
            return Ok(t.mime_type());
        }
        if archive.is_some() {
            return Ok(ZIP);
        }
        if self.text && self.carry.is_empty() {
            return Ok(TEXT_PLAIN);
        }
        Ok(OCTET_STREAM)
    }
}

/// What a ZIP archive found in the content holds, or `None` when there is none.
fn zip_kind<R: Read + Seek>(r: &mut R, len: u64, starts_as_zip: bool) -> io::Result<Option<&'static str>> {
    let mut facts = ZipFacts::default();
    let directory = read_central_directory(r, len, &mut facts)?;
    if starts_as_zip {
        walk_local_headers(r, len, &mut facts)?;
    }
    if directory.is_none() && !starts_as_zip {
        return Ok(None);
    }
    if let Some(at) = facts.content_types
        && let Some(xml) = read_entry(r, len, at)?
    {
        facts.note_content_types(&String::from_utf8_lossy(&xml).to_ascii_lowercase());
    }
    Ok(Some(facts.kind()))
}

/// What the entry names (and `[Content_Types].xml`) of an archive say.
#[derive(Debug, Default)]
struct ZipFacts {
    word: bool,
    excel: bool,
    powerpoint: bool,
    macros: bool,
    jar: bool,
    android: bool,
    appx: bool,
    /// Where `[Content_Types].xml` is: its local header offset, compressed size, method.
    content_types: Option<(u64, u64, u16)>,
}

impl ZipFacts {
    fn note_name(&mut self, raw: &[u8]) {
        // OPC part names are case-insensitive; some writers use backslashes.
        let name = String::from_utf8_lossy(raw).to_ascii_lowercase().replace('\\', "/");
        let name = name.trim_start_matches('/');
        self.word |= name.starts_with("word/");
        self.excel |= name.starts_with("xl/");
        self.powerpoint |= name.starts_with("ppt/");
        self.macros |= name.ends_with("vbaproject.bin");
        self.jar |= name == "meta-inf/manifest.mf" || name.ends_with(".class");
        self.android |= name == "androidmanifest.xml" || name == "classes.dex";
        self.appx |=
            name == "appxmanifest.xml" || name == "appxblockmap.xml" || name == "appxmetadata/appxbundlemanifest.xml";
    }

    fn note_content_types(&mut self, xml: &str) {
        self.word |= xml.contains("wordprocessingml") || xml.contains("application/vnd.ms-word");
        self.excel |= xml.contains("spreadsheetml") || xml.contains("application/vnd.ms-excel");
        self.powerpoint |= xml.contains("presentationml") || xml.contains("application/vnd.ms-powerpoint");
        self.macros |= xml.contains("macroenabled") || xml.contains("vbaproject");
    }

    fn kind(&self) -> &'static str {
        match self {
            Self { word: true, macros, .. } => {
                if *macros {
                    DOCM
                } else {
                    DOCX
                }
            }
            Self { excel: true, macros, .. } => {
                if *macros {
                    XLSM
                } else {
                    XLSX
                }
            }
            Self { powerpoint: true, macros, .. } => {
                if *macros {
                    PPTM
                } else {
                    PPTX
                }
            }
            Self { android: true, .. } => APK,
            Self { jar: true, .. } => JAR,
            Self { appx: true, .. } => APPX,
            _ => ZIP,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads up to `n` bytes at `offset` (fewer at the end of the content).
fn read_at<R: Read + Seek>(r: &mut R, offset: u64, n: u64) -> io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    r.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Finds the end-of-central-directory record in the last 64 KiB and notes every entry
/// of the central directory. `Some(())` when there is a directory.
fn read_central_directory<R: Read + Seek>(r: &mut R, len: u64, facts: &mut ZipFacts) -> io::Result<Option<()>> {
    const EOCD_LEN: usize = 22;
    let tail_len = len.min(EOCD_LEN as u64 + 65535);
    let tail_start = len - tail_len;
    let tail = read_at(r, tail_start, tail_len)?;
    if tail.len() < EOCD_LEN {
        return Ok(None);
    }
    // The last record whose comment length reaches exactly to the end, else the last one.
    let candidates: Vec<usize> =
        (0..=tail.len() - EOCD_LEN).rev().filter(|&i| tail[i..].starts_with(b"PK\x05\x06")).collect();
    let Some(&eocd) = candidates
        .iter()
        .find(|&&i| i + EOCD_LEN + usize::from(u16_at(&tail, i + 20)) == tail.len())
        .or(candidates.first())
    else {
        return Ok(None);
    };
    let eocd_pos = tail_start + eocd as u64;
    let mut entries = u64::from(u16_at(&tail, eocd + 10));
    let mut cd_size = u64::from(u32_at(&tail, eocd + 12));
    let mut cd_offset = u64::from(u32_at(&tail, eocd + 16));
    let mut record_pos = eocd_pos;
    // ZIP64: a locator just before the record points at the ZIP64 end record.
    if eocd >= 20 && tail[eocd - 20..].starts_with(b"PK\x06\x07") {
        let at = u64_at(&tail, eocd - 20 + 8);
        let rec = read_at(r, at, 56)?;
        if rec.len() == 56 && rec.starts_with(b"PK\x06\x06") {
            entries = u64_at(&rec, 32);
            cd_size = u64_at(&rec, 40);
            cd_offset = u64_at(&rec, 48);
            record_pos = at;
        }
    }
    // Data prepended to the archive (self-extractors, polyglots) shifts every offset;
    // the directory ends where the end record begins.
    let Some(cd_start) = record_pos.checked_sub(cd_size) else { return Ok(None) };
    let shift = cd_start.saturating_sub(cd_offset);
    let cd = read_at(r, cd_start, cd_size.min(MAX_CENTRAL_DIRECTORY))?;
    let mut at = 0;
    let mut seen = 0;
    while seen < entries && at + 46 <= cd.len() && cd[at..].starts_with(b"PK\x01\x02") {
        let method = u16_at(&cd, at + 10);
        let compressed = u64::from(u32_at(&cd, at + 20));
        let name_len = usize::from(u16_at(&cd, at + 28));
        let extra_len = usize::from(u16_at(&cd, at + 30));
        let comment_len = usize::from(u16_at(&cd, at + 32));
        let local = u64::from(u32_at(&cd, at + 42));
        let Some(name) = cd.get(at + 46..at + 46 + name_len) else { break };
        facts.note_name(name);
        if name.eq_ignore_ascii_case(b"[Content_Types].xml") && facts.content_types.is_none() {
            facts.content_types = Some((local + shift, compressed, method));
        }
        at += 46 + name_len + extra_len + comment_len;
        seen += 1;
    }
    // Four bytes that look like an end record inside, say, a text file are no archive.
    Ok((seen > 0).then_some(()))
}

/// Notes the names of the local headers from the start of the archive, as far as their
/// sizes allow walking (entries with a trailing data descriptor stop the walk).
fn walk_local_headers<R: Read + Seek>(r: &mut R, len: u64, facts: &mut ZipFacts) -> io::Result<()> {
    let mut pos = 0u64;
    for _ in 0..100_000 {
        let header = read_at(r, pos, 30)?;
        if header.len() < 30 || !header.starts_with(b"PK\x03\x04") {
            break;
        }
        let flags = u16_at(&header, 6);
        let method = u16_at(&header, 8);
        let compressed = u64::from(u32_at(&header, 18));
        let name_len = u64::from(u16_at(&header, 26));
        let extra_len = u64::from(u16_at(&header, 28));
        let name = read_at(r, pos + 30, name_len)?;
        facts.note_name(&name);
        if name.eq_ignore_ascii_case(b"[Content_Types].xml") && facts.content_types.is_none() {
            facts.content_types = Some((pos, compressed, method));
        }
        if flags & 0x08 != 0 || compressed == u64::from(u32::MAX) {
            break;
        }
        pos += 30 + name_len + extra_len + compressed;
        if pos >= len {
            break;
        }
    }
    Ok(())
}

/// The (inflated, bounded) content of the entry whose local header is at `offset`.
fn read_entry<R: Read + Seek>(
    r: &mut R,
    len: u64,
    (offset, compressed, method): (u64, u64, u16),
) -> io::Result<Option<Vec<u8>>> {
    let header = read_at(r, offset, 30)?;
    if header.len() < 30 || !header.starts_with(b"PK\x03\x04") {
        return Ok(None);
    }
    let data = offset + 30 + u64::from(u16_at(&header, 26)) + u64::from(u16_at(&header, 28));
    // A size unknown to the header (streamed entries) or absurd: read what is there.
    let size = if compressed == 0 || compressed == u64::from(u32::MAX) { len.saturating_sub(data) } else { compressed };
    let raw = read_at(r, data, size.min(MAX_CONTENT_TYPES))?;
    let out = match method {
        0 => raw,
        8 => {
            let mut out = Vec::new();
            // A truncated or corrupt stream still yields what inflated before the error.
            let _ = flate2::read::DeflateDecoder::new(raw.as_slice()).take(MAX_CONTENT_TYPES).read_to_end(&mut out);
            out
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// Legacy Office documents are OLE2 compound files; their directory entries (128 bytes
/// each, at 128-byte aligned offsets, named in UTF-16LE) say which application wrote them.
fn ole_kind<R: Read + Seek>(r: &mut R) -> io::Result<&'static str> {
    const NAMES: [(&str, &str); 5] =
        [("WordDocument", DOC), ("Workbook", XLS), ("Book", XLS), ("PowerPoint Document", PPT), ("Current User", PPT)];
    let wanted: Vec<(Vec<u8>, &str)> = NAMES
        .iter()
        .map(|(name, mime)| (name.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect(), *mime))
        .collect();
    let mut found: Vec<&str> = Vec::new();
    r.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(r, &mut buf)?;
        for entry in buf[..n].chunks_exact(128) {
            let name_len = usize::from(u16_at(entry, 64));
            for (name, mime) in &wanted {
                if name_len == name.len() && entry.starts_with(name) {
                    found.push(mime);
                }
            }
        }
        if n < buf.len() {
            break;
        }
    }
    // A Word document may embed a workbook, not the other way round (usually).
    Ok([DOC, PPT, XLS].into_iter().find(|m| found.contains(m)).unwrap_or(OLE_STORAGE))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            w.start_file(*name, options).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const CONTENT_TYPES: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;

    fn minimal_docx() -> Vec<u8> {
        zip_of(
            &[
                ("[Content_Types].xml", CONTENT_TYPES),
                ("_rels/.rels", b"<Relationships/>"),
                ("word/document.xml", b"<w:document/>"),
            ],
            true,
        )
    }

    fn png() -> Vec<u8> {
        let img = image::RgbImage::from_pixel(4, 3, image::Rgb([200, 10, 10]));
        let mut out = io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn docx_is_word_whatever_it_is_called() {
        assert_eq!(detect(&minimal_docx()), DOCX);
    }

    #[test]
    fn office_family_and_macros() {
        assert_eq!(detect(&zip_of(&[("xl/workbook.xml", b"<x/>")], true)), XLSX);
        assert_eq!(detect(&zip_of(&[("ppt/presentation.xml", b"<p/>")], false)), PPTX);
        assert_eq!(detect(&zip_of(&[("word/document.xml", b"<w/>"), ("word/vbaProject.bin", b"\0")], true)), DOCM);
        let xlsm_types = br#"<Types><Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.ms-excel.sheet.macroEnabled.main+xml"/></Types>"#;
        assert_eq!(detect(&zip_of(&[("[Content_Types].xml", xlsm_types), ("xl/workbook.xml", b"<x/>")], true)), XLSM);
    }

    #[test]
    fn office_parts_under_other_names_are_found_by_content_types() {
        // OPC lets the main part live anywhere; Word follows the relationships.
        let bytes = zip_of(&[("[Content_Types].xml", CONTENT_TYPES), ("stuff/main.xml", b"<w:document/>")], true);
        assert_eq!(detect(&bytes), DOCX);
        let stored = zip_of(&[("[Content_Types].xml", CONTENT_TYPES), ("x/y.xml", b"<w/>")], false);
        assert_eq!(detect(&stored), DOCX);
    }

    #[test]
    fn archives_of_programs_and_plain_zips() {
        assert_eq!(
            detect(&zip_of(&[("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"), ("a/B.class", b"\xca\xfe")], true)),
            JAR
        );
        assert_eq!(detect(&zip_of(&[("AndroidManifest.xml", b"\0"), ("classes.dex", b"dex\n")], true)), APK);
        assert_eq!(detect(&zip_of(&[("AppxManifest.xml", b"<Package/>")], true)), APPX);
        assert_eq!(detect(&zip_of(&[("notes.txt", b"hello")], true)), ZIP);
    }

    #[test]
    fn an_archive_appended_to_an_image_is_still_found() {
        let mut bytes = png();
        bytes.extend_from_slice(&minimal_docx());
        assert_eq!(detect(&bytes), DOCX);
        let mut harmless = png();
        harmless.extend_from_slice(&zip_of(&[("notes.txt", b"hello")], true));
        assert_eq!(detect(&harmless), "image/png");
    }

    #[test]
    fn streamed_zip_with_data_descriptors() {
        // Written to a non-seekable sink: sizes follow the data, so only the central
        // directory names the entries.
        let mut w = zip::ZipWriter::new_stream(Vec::new());
        let options = zip::write::SimpleFileOptions::default();
        for name in ["[Content_Types].xml", "word/document.xml"] {
            w.start_file(name, options).unwrap();
            w.write_all(b"<x/>").unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(detect(&bytes), DOCX);
    }

    fn ole_with(names: &[&str]) -> Vec<u8> {
        let mut bytes = OLE_MAGIC.to_vec();
        bytes.resize(512, 0);
        for name in names {
            let mut entry: Vec<u8> = name.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
            let len = entry.len() as u16;
            entry.resize(64, 0);
            entry.extend_from_slice(&len.to_le_bytes());
            entry.resize(128, 0);
            bytes.extend_from_slice(&entry);
        }
        bytes
    }

    #[test]
    fn ole2_compound_files() {
        assert_eq!(detect(&ole_with(&["Root Entry", "WordDocument", "1Table"])), DOC);
        assert_eq!(detect(&ole_with(&["Root Entry", "Workbook"])), XLS);
        assert_eq!(detect(&ole_with(&["Root Entry", "PowerPoint Document", "Current User"])), PPT);
        assert_eq!(detect(&ole_with(&["Root Entry", "EncryptionInfo", "EncryptedPackage"])), OLE_STORAGE);
        // The bare header alone is a compound file too.
        assert_eq!(detect(&OLE_MAGIC), OLE_STORAGE);
    }

    #[test]
    fn images_and_pdf() {
        assert_eq!(detect(&png()), "image/png");
        let mut jpeg = io::Cursor::new(Vec::new());
        image::RgbImage::new(2, 2).write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!(detect(jpeg.get_ref()), "image/jpeg");
        assert_eq!(detect(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"), "image/gif");
        assert_eq!(
            detect(
                b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
            ),
            "image/webp"
        );
        assert_eq!(detect(b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n"), "application/pdf");
    }

    #[test]
    fn executables() {
        let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
        elf.resize(64, 0);
        assert_eq!(detect(&elf), "application/x-executable");
        let mut pe = b"MZ\x90\x00".to_vec();
        pe.resize(128, 0);
        assert_eq!(detect(&pe), "application/vnd.microsoft.portable-executable");
        assert_eq!(detect(b"\xcf\xfa\xed\xfe\x07\x00\x00\x01"), "application/x-mach-binary");
        assert_eq!(detect(b"#!/bin/sh\nrm -rf /\n"), "text/x-shellscript");
    }

    #[test]
    fn text_is_utf8_without_nul() {
        assert_eq!(detect(b"hello"), TEXT_PLAIN);
        assert_eq!(detect("こんにちは、県庁です\n".as_bytes()), TEXT_PLAIN);
        assert_eq!(detect(b""), TEXT_PLAIN);
        assert_eq!(detect(b"hel\0lo"), OCTET_STREAM);
        assert_eq!(detect(b"\x82\xb1\x82\xf1"), OCTET_STREAM, "Shift_JIS is not UTF-8");
        assert_eq!(detect(b"abc\xe3\x81"), OCTET_STREAM, "a cut sequence at the end is not text");
    }

    #[test]
    fn text_split_inside_a_character_across_chunks() {
        let text = "県庁".as_bytes();
        for cut in 0..=text.len() {
            let mut s = Sniffer::new();
            s.feed(&text[..cut]);
            s.feed(&text[cut..]);
            assert_eq!(s.finish(&mut io::Cursor::new(text)).unwrap(), TEXT_PLAIN, "cut at {cut}");
        }
        let mut s = Sniffer::new();
        s.feed(b"ok \xe3");
        s.feed(b"\x41");
        assert_eq!(s.finish(&mut io::Cursor::new(b"ok \xe3\x41")).unwrap(), OCTET_STREAM);
    }
}
