"""Configuration for s3_upload.py: edit the values below, then run `python3 s3_upload.py`.

配置文件：修改下面的值，然后运行 `python3 s3_upload.py`。A config written for the original tool (v1.0) works unchanged.
Profiles are the names of sections in ~/.aws/credentials (and ~/.aws/config); see README.md.
"""

"""Basic Configure"""
JobType = "LOCAL_TO_S3"  # 'LOCAL_TO_S3' | 'S3_TO_S3' | 'ALIOSS_TO_S3'
SrcFileIndex = "*"  # 指定要上传的文件的文件名, type = str，Upload全部文件则用 "*"
# The file to upload (a name, or a path relative to SrcDir / S3Prefix); "*" uploads every file, recursively.
S3Prefix = "multipart/"  # S3_TO_S3源S3的Prefix，LOCAL_TO_S3则为目标S3的Prefix, type = str
# S3_TO_S3 / ALIOSS_TO_S3: the source prefix (destination keys equal source keys); LOCAL_TO_S3: the destination prefix.
DesProfileName = "default"  # 在~/.aws 中配置的能访问目标S3的 profile name
DesBucket = "your-destination-bucket"  # 目标文件bucket, type = str

"""Configure for LOCAL_TO_S3"""
SrcDir = "/path/to/your/files/"
# 原文件本地存放目录, S3_TO_S3则该字段无效 type = str
# The local directory to upload from; ignored for S3_TO_S3.

"""Configure for S3_TO_S3"""
SrcBucket = "your-source-bucket"  # 源Bucket，LOCAL_TO_S3则本字段无效
SrcProfileName = "default"  # 在~/.aws 中配置的能访问源S3的 profile name，LOCAL_TO_S3则本字段无效

"""Configure for ALIOSS_TO_S3"""
ali_SrcBucket = "your-oss-bucket"  # 阿里云OSS 源Bucket，LOCAL_TO_S3/S3_TO_S3则本字段无效
ali_access_key_id = "your-access-key-id"  # 阿里云 RAM 用户访问密钥 (a RAM user's AccessKey, not an AWS profile)
ali_access_key_secret = "your-access-key-secret"
ali_endpoint = "oss-cn-beijing.aliyuncs.com"  # OSS endpoint of the bucket's region (OSS控制台可以找到)
# Without a scheme the endpoint is reached over https://; write "http://oss-cn-beijing.aliyuncs.com" for plain http.

"""Advanced Configure"""
Megabytes = 1024 * 1024
ChunkSize = 10 * Megabytes  # 文件分片大小，不小于5M，单文件分片总数不能超过10000, type = int
# Part size, 5 MiB to 5 GiB.  A file that would need more than 9,999 parts gets a larger part size (logged).
MaxRetry = 30  # 单个Part上传失败后，最大重试次数, type = int
# Retries per request; the n-th retry waits n x 5 seconds.
MaxThread = 5  # 单文件同时上传的进程数量, type = int
MaxParallelFile = 5  # 并行操作文件数量, type = int
# 即同时并发的进程数 = MaxParallelFile * MaxThread
# Concurrent requests = MaxParallelFile x MaxThread; memory is about MaxParallelFile x MaxThread x ChunkSize.
# These are the original v1.2's values (v1.0's sample had 50 MiB, 3, 3): 25 requests in flight fill a long link.
IgnoreSmallFile = False  # 是否跳过小于chunksize的小文件, type = bool
StorageClass = "STANDARD"
# 'STANDARD'|'REDUCED_REDUNDANCY'|'STANDARD_IA'|'ONEZONE_IA'|'INTELLIGENT_TIERING'|'GLACIER'|'DEEP_ARCHIVE'
# |'GLACIER_IR'
ifVerifyMD5 = False
# 整个文件完成上传合并之后再次进行整个文件的ETag校验MD5。该开关不影响每个分片上传时候的MD5校验。
# 对于S3_TO_S3，该开关True会在断点续传的时候重新下载所有已传过的分片来计算MD5
# True: after completing a file, read the whole source again and compare its ETag (S3_TO_S3: downloads it again).
# Every part is always sent with Content-MD5 and every multipart ETag is always checked, whatever this says.
DontAskMeToClean = False  # False 遇到存在现有的未完成upload时，不再询问是否Clean，默认不Clean，自动续传
# True: do not ask about unfinished uploads, just resume them.
LoggingLevel = "INFO"  # 日志输出级别 'WARNING' | 'INFO' | 'DEBUG'

"""Advanced Configure (optional; not in the original v1.0, defaults shown)"""
# RetryDelay = 5  # the n-th retry of a request waits n x RetryDelay seconds
# ConnectTimeout = 10  # seconds to open a connection
# ReadTimeout = 120  # seconds without a byte from the server before a request is retried
# ChecksumMode = "MD5"  # "MD5": Content-MD5 only (any S3-compatible store); "MD5_CRC32": also botocore's CRC32
# LogDir = "log"  # where log/s3_upload-<timestamp>.log is written (relative to the working directory)

"""Optional features (defaults shown; see README.md)"""
# DesEndpointURL = ""  # an S3-compatible destination, e.g. "https://minio.example.com:9000"; "" = AWS / the profile
# SrcEndpointURL = ""  # the same for the S3_TO_S3 source
# AddressingStyle = "auto"  # "path" for most S3-compatible stores
# ServerSideEncryption = ""  # "AES256" or "aws:kms"
# SSEKMSKeyId = ""  # the KMS key for "aws:kms"
# ACL = ""  # e.g. "bucket-owner-full-control" when writing into another account's bucket
# MaxBandwidth = 0  # upload cap in bytes per second for all threads, e.g. 20 * Megabytes
# CopyMode = "auto"  # S3_TO_S3: "auto" lets S3 copy the parts itself when it can, "server" requires it, "stream" never
# AbandonedAfter = 3600  # an unfinished upload nothing was added to for this many seconds is aborted; sooner, it may
#                         # be another run's work in progress, and is left alone
# SQSProfileName = ""  # fleet mode: the profile for the SQS queue ("" = DesProfileName)
# SQSEndpointURL = ""  # fleet mode: "" = the region's SQS endpoint
# SQSIdleSeconds = 60  # fleet mode: a worker exits after the queue was empty this long
# SQSVisibilityTimeout = 300  # fleet mode: seconds a taken message stays hidden while a worker works on it
# SQSPartsPerMessage = 64  # fleet mode: a file of more parts goes out as ranges of this many parts, one per message,
#                         # so that many workers send it together
