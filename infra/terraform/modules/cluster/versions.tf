terraform {
  # no provider: the module renders manifests with Terraform's own functions
  required_version = ">= 1.11.0"
}
