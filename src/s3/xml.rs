//! The answers of the S3 API that tartape reads, parsed by quick-xml's serde support.
//! Element names are matched without their namespace: AWS puts its `xmlns` on every
//! answer, rclone and others none, and some name the roots differently
//! (`InitiateMultipartUpload` for `InitiateMultipartUploadResult`). A missing
//! `IsTruncated` means false (rclone leaves it out of the last page).

use serde::Deserialize;

/// `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorXml {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: Option<String>,
}

/// The answer to CreateMultipartUpload.
#[derive(Debug, Deserialize)]
pub(crate) struct InitiateXml {
    #[serde(rename = "UploadId")]
    pub upload_id: String,
}

/// One page of ListParts.
#[derive(Debug, Deserialize)]
pub(crate) struct ListPartsXml {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: Option<bool>,
    #[serde(rename = "NextPartNumberMarker", default)]
    pub next_marker: Option<u32>,
    #[serde(rename = "Part", default)]
    pub parts: Vec<PartXml>,
}

/// A part the server holds.
#[derive(Debug, Deserialize)]
pub(crate) struct PartXml {
    #[serde(rename = "PartNumber")]
    pub number: u32,
    #[serde(rename = "ETag")]
    pub etag: String,
    #[serde(rename = "Size")]
    pub size: u64,
}

/// The answer to CompleteMultipartUpload (which may be an `<Error>` even with 200 OK).
#[derive(Debug, Deserialize)]
pub(crate) struct CompleteXml {
    #[serde(rename = "ETag", default)]
    pub etag: Option<String>,
}

/// Parses `body` as `T`; `None` when it is not one.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Option<T> {
    quick_xml::de::from_str(body).ok()
}

/// The S3 error an answer carries, if its body is one (it has a `Code`: no answer that
/// is not an error has one).
pub(crate) fn error_of(body: &str) -> Option<ErrorXml> {
    parse::<ErrorXml>(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_and_without_the_aws_namespace() {
        // rclone's: no namespace, its own root name, quoted ETags as entities.
        let rclone = "<InitiateMultipartUpload><Bucket>b</Bucket><Key>k</Key>\
            <UploadId>abc-123</UploadId></InitiateMultipartUpload>";
        assert_eq!(parse::<InitiateXml>(rclone).unwrap().upload_id, "abc-123");
        let aws = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>VXBsb2Fk</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(parse::<InitiateXml>(aws).unwrap().upload_id, "VXBsb2Fk");

        let page = "<ListPartsResult><Bucket>t</Bucket><PartNumberMarker>0</PartNumberMarker>\
            <NextPartNumberMarker>2</NextPartNumberMarker><MaxParts>1</MaxParts>\
            <IsTruncated>true</IsTruncated><Part><PartNumber>1</PartNumber>\
            <LastModified>2026-12-05T23:49:20.366Z</LastModified>\
            <ETag>&#34;fdbc82d8&#34;</ETag><Size>5242880</Size></Part></ListPartsResult>";
        let page = parse::<ListPartsXml>(page).unwrap();
        assert_eq!(page.is_truncated, Some(true));
        assert_eq!(page.next_marker, Some(2));
        assert_eq!(page.parts.len(), 1);
        assert_eq!(page.parts[0].etag, "\"fdbc82d8\"");
        assert_eq!((page.parts[0].number, page.parts[0].size), (1, 5242880));
        let last = "<ListPartsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
            <NextPartNumberMarker>0</NextPartNumberMarker>\
            <Part><PartNumber>3</PartNumber><ETag>&quot;aa&quot;</ETag><Size>7</Size></Part>\
            <Part><PartNumber>4</PartNumber><ETag>\"bb\"</ETag><Size>8</Size></Part>\
            </ListPartsResult>";
        let last = parse::<ListPartsXml>(last).unwrap();
        assert_eq!(last.is_truncated, None);
        assert_eq!(last.parts.len(), 2);
        assert_eq!(last.parts[1].etag, "\"bb\"");
        let none = parse::<ListPartsXml>("<ListPartsResult></ListPartsResult>").unwrap();
        assert!(none.parts.is_empty());

        let done = "<CompleteMultipartUploadResult><ETag>&#34;9b2c-3&#34;</ETag>\
            </CompleteMultipartUploadResult>";
        assert_eq!(
            parse::<CompleteXml>(done).unwrap().etag.as_deref(),
            Some("\"9b2c-3\"")
        );
    }

    #[test]
    fn errors_are_told_from_answers() {
        let e = error_of(
            "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not \
             exist</Message><Resource>x</Resource></Error>",
        )
        .unwrap();
        assert_eq!(e.code, "NoSuchBucket");
        assert_eq!(
            e.message.as_deref(),
            Some("The specified bucket does not exist")
        );
        let e = error_of("<?xml version=\"1.0\"?>\n<Error><Code>NoSuchKey</Code></Error>").unwrap();
        assert_eq!((e.code.as_str(), e.message), ("NoSuchKey", None));
        assert!(
            error_of(
                "<CompleteMultipartUploadResult><ETag>x</ETag></CompleteMultipartUploadResult>"
            )
            .is_none()
        );
        assert!(error_of("").is_none());
        assert!(error_of("not xml at all").is_none());
    }
}
