//! Reading the account CSV (RFC 4180: quoted fields, doubled quotes, CRLF or LF, a UTF-8
//! byte order mark), keeping the line each record starts on for error reports. The CLI
//! reads a file with it before sending rows; the admin API reads an uploaded CSV with it.

/// One record and the line (from 1) it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// The records of a CSV text; blank lines are skipped. An error names its line.
pub fn parse(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut in_quotes, mut quoted) = (false, false);
    let (mut line, mut start_line) = (1, 1);
    let mut chars = text.chars().peekable();
    let end_record = |fields: &mut Vec<String>, start: usize, out: &mut Vec<Record>| {
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            out.push(Record { line: start, fields: std::mem::take(fields) });
        }
        fields.clear();
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => (in_quotes, quoted) = (true, true),
            '"' => return Err((line, "a quote inside an unquoted field".into())),
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
                end_record(&mut fields, start_line, &mut out);
                line += 1;
                start_line = line;
            }
            _ if quoted => return Err((line, "text after a closing quote".into())),
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err((start_line, "a quoted field is not closed".into()));
    }
    if !field.is_empty() || !fields.is_empty() || quoted {
        fields.push(field);
        end_record(&mut fields, start_line, &mut out);
    }
    Ok(out)
}

/// Whether a record is the header row (`user_id,displayname,department`).
pub fn is_header(r: &Record) -> bool {
    matches!(r.fields.first().map(|f| f.trim().to_lowercase()).as_deref(), Some("user_id" | "user" | "user id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_lines() {
        let rows = parse("user_id,name,dept\r\na,\"A, \"\"x\"\"\",総務課\n\nb,\"two\nlines\",y\nc,C,z").unwrap();
        assert!(is_header(&rows[0]));
        assert_eq!(rows[1], Record { line: 2, fields: vec!["a".into(), "A, \"x\"".into(), "総務課".into()] });
        assert_eq!((rows[2].line, rows[2].fields[1].as_str()), (4, "two\nlines"));
        assert_eq!(rows[3].line, 6);
        assert_eq!(parse("a,\"b\n").unwrap_err().0, 1);
        assert_eq!(parse("ok\nx\"y\n").unwrap_err().0, 2);
        assert!(parse("a,\"b,c\n").is_err());
        assert_eq!(parse("a,b\"c,d\n").unwrap_err().0, 1);
        assert_eq!(parse("a,\"b\"c\n").unwrap_err().1, "text after a closing quote");
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\u{feff}user,name,dept\n").is_ok_and(|r| is_header(&r[0])));
    }
}
