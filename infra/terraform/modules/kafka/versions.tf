terraform {
  # 1.11: write-only arguments (the SCRAM passwords never reach plan or state) and
  # variable validations that refer to other variables (replication factor vs brokers)
  required_version = ">= 1.11.0"

  required_providers {
    kafka = {
      source  = "Mongey/kafka"
      version = "= 0.13.1"
    }
  }
}
